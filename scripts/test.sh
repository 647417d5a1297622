#!/usr/bin/env bash
# test.sh - the whole test suite: lint (ruff, eslint, prettier, stylelint), jest,
# and pytest with real processes: gateways, schedulers and workers, a JupyterHub with
# configurable-http-proxy, JupyterLab in headless Chromium, a Slurm, an MIT Kerberos KDC
# and a Kubernetes (API server, controllers, a kubelet with containerd) on this machine.
# Runs as root: the tests create real accounts for their users, as the demo does.
# Everything runs from the environment setup.sh makes (Debian's python3, under /opt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh must run as root (the tests create accounts)" >&2; exit 1; }

WITH_BROWSER=1 bash scripts/setup.sh
VENV=${JHDG_VENV:-/opt/jupyterhub-dask-gateway}
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
"$PY" -c 'import sys; print("== Python", sys.version.split()[0], sys.executable, "==")'
bash scripts/slurm-localhost.sh
bash scripts/kdc-localhost.sh
# A real Kubernetes (built once from Debian's source package, ~10 min on 2 cores, then
# cached). If it cannot start here, the reason goes where the Kubernetes tests read it
# and they are skipped with it; .ci/run sets JHDG_REQUIRE_K8S=1, which fails them instead.
K8S_UNAVAILABLE=/tmp/k8s-localhost.unavailable
rm -f "$K8S_UNAVAILABLE"
if ! bash scripts/k8s-localhost.sh 2>/tmp/k8s-localhost-script.log; then
  cat /tmp/k8s-localhost-script.log >&2
  grep 'ERROR' /tmp/k8s-localhost-script.log | tail -1 > "$K8S_UNAVAILABLE"
  [ -s "$K8S_UNAVAILABLE" ] || echo "scripts/k8s-localhost.sh failed" > "$K8S_UNAVAILABLE"
fi
trap 'bash scripts/slurm-localhost-stop.sh --purge >/dev/null 2>&1 || true
      bash scripts/kdc-localhost-stop.sh --purge >/dev/null 2>&1 || true
      bash scripts/k8s-localhost-stop.sh --purge >/dev/null 2>&1 || true' EXIT

echo "== dependency advisories =="
# Every installed package against PyPI's advisory data; a known-vulnerable one fails.
"$PY" -m pip_audit --progress-spinner off --skip-editable
echo "== lint =="
"$PY" -m ruff check .
"$PY" -m ruff format --check .
jlpm install --immutable >/dev/null
jlpm lint:check
echo "== jest =="
jlpm test --silent
echo "== pytest =="
"$PY" -m pytest "$@"
