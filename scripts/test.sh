#!/usr/bin/env bash
# test.sh - the whole test suite: lint (ruff, eslint, prettier, stylelint), jest,
# and pytest with real processes: gateways, schedulers and workers, a JupyterHub with
# configurable-http-proxy, JupyterLab in headless Chromium, and a Slurm on localhost.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
WITH_BROWSER=1 bash scripts/setup.sh
bash scripts/slurm-localhost.sh
trap 'bash scripts/slurm-localhost-stop.sh --purge >/dev/null 2>&1 || true' EXIT

echo "== lint =="
"$PY" -m ruff check .
"$PY" -m ruff format --check .
jlpm install --immutable >/dev/null
jlpm lint:check
echo "== jest =="
jlpm test --silent
echo "== pytest =="
"$PY" -m pytest "$@"
