#!/usr/bin/env bash
# setup.sh - install everything this project needs on a fresh Debian machine.
#
# Idempotent; run by demo.sh and test.sh. Needs root (apt-get, npm -g, /opt).
#
# Everything runs from one virtual environment, $JHDG_VENV (default
# /opt/jupyterhub-dask-gateway), made from Debian's own python3 ($PYTHON to choose
# another). It lives under /opt because users' single-user servers, schedulers and
# workers run as their own accounts and must be able to execute it: a Python under
# /root (0700) is out of their reach. The project is installed into it editable when
# every account can read this checkout, and as a regular install otherwise (e.g. a
# clone under /root); building it builds the JupyterLab panel with jlpm.
# Also installs configurable-http-proxy from npm (the Hub's proxy) and, with
# WITH_BROWSER=1, Debian's chromium for the browser tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${JHDG_VENV:-/opt/jupyterhub-dask-gateway}
BASE_PY=${PYTHON:-/usr/bin/python3}
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
[ -x "$BASE_PY" ] || need_apt+=(python3)
"$BASE_PY" -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
[ -e /usr/include/python3.11/Python.h ] || need_apt+=(python3-dev)
command -v gcc >/dev/null || need_apt+=(gcc)
# gssapi and pykerberos (the Kerberos authenticator and the client's KerberosAuth, in the
# test extra) build against the system's Kerberos.
command -v krb5-config >/dev/null || need_apt+=(libkrb5-dev)
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

if [ ! -x "$VENV/bin/python" ]; then
  say "python venv at $VENV (from $BASE_PY)"
  "$BASE_PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
fi
chmod 755 "$VENV"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"  # jlpm and the package.json scripts that call it

# readable_by_all DIR: every account can reach DIR (each ancestor is o+x, DIR o+rx)
readable_by_all() {
  local d
  d=$(realpath "$1")
  [ -n "$(find "$d" -maxdepth 0 -perm -o=rx)" ] || return 1
  while [ "$d" != / ]; do
    d=$(dirname "$d")
    [ -n "$(find "$d" -maxdepth 0 -perm -o=x)" ] || return 1
  done
}

# The panel is built once with the venv's jlpm (from jupyterlab); wheels then carry it.
if [ ! -f jupyterhub_dask_gateway/server_extension/labextension/static/style.js ]; then
  [ -x "$VENV/bin/jlpm" ] || "$PY" -m pip install -q --disable-pip-version-check "jupyterlab>=4.2,<5"
  say "jlpm install && jlpm build:prod (the JupyterLab panel)"
  "$VENV/bin/jlpm" install --immutable >/dev/null
  "$VENV/bin/jlpm" build:prod >/dev/null
fi
if readable_by_all .; then
  if ! "$PY" -c "import jupyterhub_dask_gateway, playwright" 2>/dev/null \
     || [ pyproject.toml -nt "$VENV/.jhdg-installed" ]; then
    say "pip install -e .[test] into $VENV"
    "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
    touch "$VENV/.jhdg-installed"
  fi
else
  # Users' processes could not import an editable install from here: copy it in.
  say "$(pwd) is not readable by other accounts: pip install .[test] into $VENV (not editable)"
  "$PY" -m pip install -q --disable-pip-version-check ".[test]"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
  touch "$VENV/.jhdg-installed"
fi
say "ready ($PY)"
