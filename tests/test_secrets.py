"""Secrets at rest and in logs: the database and the logs hold no token or key."""

import os
import stat

from helpers import wait_for


def test_no_plaintext_secrets_in_db_or_logs(make_gateway):
    gw = make_gateway()
    with gw.gateway() as gateway:
        cluster = gateway.new_cluster()
        cluster.scale(1)
        wait_for(lambda: len(cluster.scheduler_info["workers"]) == 1, 60, what="workers")
        report = gateway.get_cluster(cluster.name)
        # Every base64 line of both, so the private scalar of a short EC key is covered too.
        key_lines = report.tls_key.splitlines()[1:-1]
        cert_lines = report.tls_cert.splitlines()[1:-1]
        cluster.shutdown()
    from jupyterhub_dask_gateway.store import Store, load_or_create_key_file

    keys = load_or_create_key_file(os.path.join(gw.state_dir, "encryption.key"))
    url = "sqlite:///" + os.path.join(gw.state_dir, "gateway.sqlite")
    token = Store(url, keys).load()[cluster.name].token
    assert len(token) == 64
    db = open(os.path.join(gw.state_dir, "gateway.sqlite"), "rb").read()
    wal = os.path.join(gw.state_dir, "gateway.sqlite-wal")
    if os.path.exists(wal):
        db += open(wal, "rb").read()
    for secret in (*key_lines, *cert_lines, token):
        assert secret.encode() not in db
    logs = gw.log()
    for root, _, files in os.walk(gw.state_dir):
        for f in files:
            if f.endswith(".log"):
                logs += open(os.path.join(root, f), errors="replace").read()
    assert not any(line in logs for line in key_lines)
    assert "PRIVATE KEY" not in logs
    assert token not in logs
    # Key file and state directory permissions.
    key_file = os.path.join(gw.state_dir, "encryption.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # Passable (clusters run as their owners and reach their work dirs), never listable;
    # every file in it the gateway's alone.
    assert stat.S_IMODE(os.stat(gw.state_dir).st_mode) == 0o711
    for entry in os.scandir(gw.state_dir):
        if entry.is_file():
            assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry.name
