#!/usr/bin/env bash
# demo.sh - set everything up and run a demo JupyterHub with the Dask Gateway.
#
# The Hub listens on http://127.0.0.1:8000 with demo users alice and bob (and an
# admin user "admin"), password "demo". The gateway runs as a Hub-managed service
# with the local backend and sqlite state in ./demo-state.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
mkdir -p demo-state
cat <<'MSG'

  JupyterHub with the Dask Gateway: http://127.0.0.1:8000
  Log in as alice, bob or admin with password "demo". In JupyterLab, open the
  Dask Gateway panel in the left sidebar, or run in a notebook:
      from dask_gateway import Gateway
      cluster = Gateway().new_cluster()

MSG
cd demo-state
exec "${PYTHON:-python3}" -m jupyterhub -f ../demo/jupyterhub_config.py
