#!/usr/bin/env bash
# setup.sh - install everything this project needs on a fresh Debian machine.
#
# Idempotent; sourced by demo.sh and test.sh. Installs: the Python package with its
# test extras (editable; building it also builds the JupyterLab panel with jlpm),
# configurable-http-proxy from npm (the Hub's proxy), and, with WITH_BROWSER=1,
# Debian's chromium for the browser tests. Needs root for apt-get and npm -g.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ "${WITH_BROWSER:-0}" = 1 ] && [ ! -x /usr/bin/chromium ]; then need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v configurable-http-proxy >/dev/null; then
  say "npm install -g configurable-http-proxy"
  npm install -g --no-fund --no-audit configurable-http-proxy >/dev/null
fi

if ! "$PY" -c "import jupyterhub_dask_gateway, playwright" 2>/dev/null \
   || [ ! -f jupyter_server_ext/labextension/package.json ] \
   || [ pyproject.toml -nt jupyter_server_ext/labextension/package.json ]; then
  say "pip install -e .[test] (builds the JupyterLab panel)"
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
fi
# The editable install may skip the panel build; make sure the prebuilt assets exist.
if [ ! -f jupyter_server_ext/labextension/static/style.js ]; then
  say "jlpm install && jlpm build:prod"
  jlpm install --immutable >/dev/null
  jlpm build:prod >/dev/null
fi
say "ready"
