"""A cluster's events and log tails through the API, with real processes.

A scheduler that cannot start: the client raises with the reason, the events say so,
the logs endpoint has the scheduler's last lines. A worker killed with SIGKILL is an
event naming the signal. Only the owner and admins may read either.
"""

from __future__ import annotations

import os
import signal

import pytest
import requests

from helpers import PASSWORD, wait_for

BROKEN_PYTHON = """#!/bin/sh
echo "boom: this scheduler cannot start (a broken environment)" >&2
exit 3
"""


@pytest.fixture
def gw(make_gateway, tmp_path):
    broken = tmp_path / "broken-python"
    broken.write_text(BROKEN_PYTHON)
    broken.chmod(0o755)
    return make_gateway(f"""
from jupyterhub_dask_gateway.options import Bool, Options

def handler(options):
    return {{"python": {str(broken)!r}}} if options.broken else {{}}

c.Backend.cluster_options = Options(Bool("broken", False, label="Broken"), handler=handler)
c.BasicAuthenticator.passwords = {{"ops": "ops-secret"}}
c.BasicAuthenticator.admin_users = {{"ops"}}
c.DaskGateway.check_timeouts_period = 0.5
""")


def get(gw, path, user="alice", password=PASSWORD, **params):
    return requests.get(
        f"{gw.address}/api/v1/{path}", auth=(user, password), params=params, timeout=30
    )


def test_a_failed_start_explains_itself(gw):
    from dask_gateway import GatewayClusterError

    with gw.gateway() as gateway:
        name = gateway.submit(broken=True)
        # Whether it died before or after the launcher handed it its request, the reason
        # quotes what it printed.
        with pytest.raises(
            GatewayClusterError, match="exited with status 3.*boom: this scheduler cannot start"
        ):
            gateway.connect(name)
    events = get(gw, f"clusters/{name}/events").json()["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "created" and "failed" in kinds and kinds[-1] == "stopped"
    failed = next(e for e in events if e["kind"] == "failed")
    assert "boom: this scheduler cannot start" in failed["message"]
    logs = get(gw, f"clusters/{name}/logs", process="scheduler", tail=10).json()
    assert "boom: this scheduler cannot start" in logs["text"]
    assert logs["processes"] == ["scheduler"]
    # Strangers see nothing; admins see everything.
    assert get(gw, f"clusters/{name}/logs", user="bob").status_code == 404
    assert get(gw, f"clusters/{name}/events", user="bob").status_code == 404
    admin = get(gw, f"clusters/{name}/logs", user="ops", password="ops-secret")
    assert admin.status_code == 200 and "boom" in admin.json()["text"]
    for tail in ("lots", "²", "0", "1001"):
        bad = get(gw, f"clusters/{name}/logs", tail=tail)
        assert bad.status_code == 400 and "tail must be" in bad.json()["error"], tail
    assert get(gw, f"clusters/{name}/logs", process="nope").status_code == 404


def test_a_killed_worker_is_an_event_with_its_signal(gw):
    with gw.gateway() as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            (info,) = client.scheduler_info()["workers"].values()
            worker = str(info["name"])
            (pid,) = client.run(os.getpid).values()  # the worker process itself
            os.kill(pid, signal.SIGKILL)

            def worker_failed():
                events = get(gw, f"clusters/{cluster.name}/events").json()["events"]
                return [e for e in events if e["kind"] == "worker_failed"]

            (event,) = wait_for(worker_failed, 30, interval=0.2, what="the worker_failed event")
            assert event["worker"] == worker
            assert "killed by SIGKILL (signal 9)" in event["message"]
            # It is replaced, and the scheduler's log is there for the owner.
            client.wait_for_workers(1, timeout=60)
        logs = get(gw, f"clusters/{cluster.name}/logs", tail=50).json()
        assert "Scheduler at" in logs["text"] and worker in logs["processes"]
        worker_log = get(gw, f"clusters/{cluster.name}/logs", process=worker).json()
        assert "Start worker" in worker_log["text"]
