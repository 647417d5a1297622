#!/usr/bin/env bash
# demo.sh - set everything up and run a demo JupyterHub with the Dask Gateway.
#
# Run as root. The Hub listens on http://127.0.0.1:8000 with demo users alice and bob
# (and an admin user "admin"), password "demo". They are real accounts on this machine
# (created here when missing): each user's JupyterLab, and each user's Dask clusters,
# run as that user's own account. The gateway runs as a Hub-managed service with the
# local backend and sqlite state in $JHDG_DEMO_STATE (default
# /var/lib/jupyterhub-dask-gateway-demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh must run as root (it creates the demo accounts)" >&2; exit 1; }
bash scripts/setup.sh
VENV=${JHDG_VENV:-/opt/jupyterhub-dask-gateway}
STATE=${JHDG_DEMO_STATE:-/var/lib/jupyterhub-dask-gateway-demo}
CONFIG=$(pwd)/demo/jupyterhub_config.py

for user in alice bob admin; do
  id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
done
# Private files by default (the Hub's database, secrets); the state directory can be
# passed through (not listed) so users' clusters reach their own work dirs below it.
umask 077
mkdir -p "$STATE"
chmod 711 "$STATE"
cat <<'MSG'

  JupyterHub with the Dask Gateway: http://127.0.0.1:8000
  Log in as alice, bob or admin with password "demo". In JupyterLab, open the
  Dask Gateway panel in the left sidebar, or run in a notebook:
      from dask_gateway import Gateway
      cluster = Gateway().new_cluster()

MSG
cd "$STATE"
exec "$VENV/bin/python" -m jupyterhub -f "$CONFIG"
