#!/usr/bin/env bash
# kdc-localhost-stop.sh - stop the KDC kdc-localhost.sh started (by its pid file);
# --purge also removes the realm's directory.
set -uo pipefail
KDC_DIR=${KDC_DIR:-/var/lib/jupyterhub-dask-gateway-kdc}
pidfile="$KDC_DIR/krb5kdc.pid"
if [ -s "$pidfile" ]; then
  pid=$(cat "$pidfile")
  # Only the KDC we started: the pid must still be a krb5kdc.
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = krb5kdc ]; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$KDC_DIR"
fi
