#!/usr/bin/env bash
# kdc-localhost.sh - a real MIT Kerberos KDC on 127.0.0.1, for the Kerberos tests.
#
# Installs Debian's krb5-kdc, krb5-admin-server and krb5-user (and libkrb5-dev, which the
# gssapi and pykerberos wheels are built against), creates the realm DASK.TEST in
# $KDC_DIR (default /var/lib/jupyterhub-dask-gateway-kdc) with the principals the tests
# use, exports the gateway's HTTP/localhost keytab, and starts krb5kdc on a loopback port.
# Nothing outside $KDC_DIR is changed: clients and the gateway find the realm through
# KRB5_CONFIG=$KDC_DIR/krb5.conf. Idempotent; stop it with kdc-localhost-stop.sh.
set -euo pipefail

KDC_DIR=${KDC_DIR:-/var/lib/jupyterhub-dask-gateway-kdc}
REALM=DASK.TEST
PORT=${KDC_PORT:-18088}
PASSWORD=kerberos-test-password
[ "$(id -u)" = 0 ] || { echo "kdc-localhost.sh must run as root" >&2; exit 1; }

need=()
for cmd in krb5kdc kdb5_util kadmin.local kinit krb5-config; do
  command -v "$cmd" >/dev/null || need=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev)
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[kdc] apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

if [ -f "$KDC_DIR/krb5kdc.pid" ] && kill -0 "$(cat "$KDC_DIR/krb5kdc.pid")" 2>/dev/null; then
  echo "[kdc] already running (pid $(cat "$KDC_DIR/krb5kdc.pid")), KRB5_CONFIG=$KDC_DIR/krb5.conf"
  exit 0
fi

mkdir -p "$KDC_DIR"
chmod 0755 "$KDC_DIR"  # the test accounts read krb5.conf; the database and keytab are 0600
# clockskew 5: tickets and requests older than that (plus their lifetime) are refused, so
# the tests can present an expired ticket after seconds instead of the default 5 minutes.
cat > "$KDC_DIR/krb5.conf" <<EOF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    clockskew = 5
    udp_preference_limit = 1

[realms]
    $REALM = {
        kdc = 127.0.0.1:$PORT
    }

[domain_realm]
    localhost = $REALM
EOF
cat > "$KDC_DIR/kdc.conf" <<EOF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$PORT
    kdc_tcp_listen = 127.0.0.1:$PORT

[realms]
    $REALM = {
        database_name = $KDC_DIR/principal
        key_stash_file = $KDC_DIR/stash
        acl_file = $KDC_DIR/kadm5.acl
        max_life = 1h
        max_renewable_life = 0
    }

[logging]
    kdc = FILE:$KDC_DIR/kdc.log
EOF
touch "$KDC_DIR/kadm5.acl"
export KRB5_CONFIG="$KDC_DIR/krb5.conf" KRB5_KDC_PROFILE="$KDC_DIR/kdc.conf"

if [ ! -f "$KDC_DIR/principal" ]; then
  echo "[kdc] creating realm $REALM in $KDC_DIR"
  kdb5_util -r "$REALM" create -s -P "$(head -c 24 /dev/urandom | base64)" >/dev/null
fi
for user in alice bob carol; do
  kadmin.local -q "addprinc -pw $PASSWORD $user" >/dev/null 2>&1 || true
done
# The gateway's service principal, and one of another service (a ticket for it must not
# open the gateway).
for princ in HTTP/localhost host/localhost; do
  kadmin.local -q "addprinc -randkey $princ" >/dev/null 2>&1 || true
done
rm -f "$KDC_DIR/http.keytab" "$KDC_DIR/host.keytab"
kadmin.local -q "ktadd -k $KDC_DIR/http.keytab HTTP/localhost" >/dev/null
kadmin.local -q "ktadd -k $KDC_DIR/host.keytab host/localhost" >/dev/null
chmod 0600 "$KDC_DIR/http.keytab" "$KDC_DIR/host.keytab"

krb5kdc -P "$KDC_DIR/krb5kdc.pid"
for _ in $(seq 1 100); do
  [ -s "$KDC_DIR/krb5kdc.pid" ] && break
  sleep 0.1
done
echo "$PASSWORD" | kinit -c "MEMORY:probe" alice >/dev/null \
  || { echo "[kdc] the KDC does not answer; see $KDC_DIR/kdc.log" >&2; exit 1; }
echo "[kdc] KDC for $REALM on 127.0.0.1:$PORT (pid $(cat "$KDC_DIR/krb5kdc.pid")), KRB5_CONFIG=$KDC_DIR/krb5.conf"
