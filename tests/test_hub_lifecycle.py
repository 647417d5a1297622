"""Under a real Hub, a user's clusters end with their last server (hub_watch.py).

alice's server is stopped through the Hub API, or culled by jupyterhub-idle-culler run
as a Hub service: her clusters stop within the grace period and their events say why;
bob's, whose server keeps running, are untouched; with the setting off they survive.
"""

from __future__ import annotations

import sys
import time

import pytest
from dask_gateway import GatewayClusterError

from helpers import wait_for

pytestmark = pytest.mark.timeout(240)

GRACE = 2  # seconds without a server before the clusters stop


def follows(hub, user):
    """Wait until the gateway has seen ``user`` with a server (it says so once)."""
    wait_for(
        lambda: f"Hub: {user} has a server; their clusters follow it" in hub.log(),
        30,
        interval=0.1,
        what=f"the gateway to see {user}'s server",
    )


def events_of(hub, token, name):
    import requests

    r = requests.get(
        f"{hub.gateway_url}/api/v1/clusters/{name}/events",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["events"]


def status(gateway, name):
    return gateway.get_cluster(name).status.name


WATCH = f"""
c.DaskGateway.server_stop_grace_period = {GRACE}
c.DaskGateway.hub_poll_period = 0.5
"""

CULLER = [
    sys.executable,
    "-m",
    "jupyterhub_idle_culler",
    "--timeout=4",
    "--cull-every=1",
    "--concurrency=1",
]


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub(hub_config="c.JupyterHub.allow_named_servers = True\n", gateway_config=WATCH)


def test_clusters_stop_with_their_owners_server(hub):
    alice_token, bob_token = hub.new_token("alice")["token"], hub.new_token("bob")["token"]
    hub.start_server("alice")
    hub.start_server("bob")
    try:
        with hub.gateway(alice_token) as alice, hub.gateway(bob_token) as bob:
            mine = alice.submit()
            theirs = bob.submit()
            assert alice.connect(mine).status == "running"
            assert bob.connect(theirs).status == "running"
            follows(hub, "alice")
            follows(hub, "bob")
            hub.stop_server("alice")
            wait_for(
                lambda: status(alice, mine) == "STOPPED",
                GRACE + 30,
                interval=0.2,
                what="alice's cluster to stop",
            )
            kinds = {e["kind"]: e["message"] for e in events_of(hub, alice_token, mine)}
            assert "last server of its owner alice stopped" in kinds["stop_requested"]
            # The client says why, too.
            with pytest.raises(GatewayClusterError, match="last server of its owner alice"):
                alice.connect(mine)
            assert status(bob, theirs) == "RUNNING"  # bob's server still runs
            bob.stop_cluster(theirs)
    finally:
        hub.stop_server("bob")


def test_named_servers_count(hub):
    token = hub.new_token("dave")["token"]
    r = hub.api("POST", "users/dave/servers/work")
    assert r.status_code in (201, 202), r.text
    wait_for(
        lambda: hub.api("GET", "users/dave").json()["servers"].get("work", {}).get("ready"),
        90,
        interval=0.25,
        what="dave's named server",
    )
    with hub.gateway(token) as dave:
        name = dave.submit()
        assert dave.connect(name).status == "running"
        follows(hub, "dave")  # his only server is a named one
        assert status(dave, name) == "RUNNING"
        hub.api("DELETE", "users/dave/servers/work")
        wait_for(
            lambda: status(dave, name) == "STOPPED",
            GRACE + 30,
            interval=0.2,
            what="dave's cluster to stop with his named server",
        )


def test_a_culled_server_takes_its_clusters_along(make_hub):
    # A Hub of its own: the culler stops every idle server, and nobody uses carol's.
    hub = make_hub(
        hub_config=f"""
        c.JupyterHub.services += [{{"name": "idle-culler", "command": {CULLER!r}}}]
        c.JupyterHub.load_roles += [
            {{
                "name": "idle-culler",
                "services": ["idle-culler"],
                "scopes": ["list:users", "read:users:activity", "read:servers",
                           "delete:servers"],
            }},
        ]
        """,
        gateway_config=WATCH,
    )
    token = hub.new_token("carol")["token"]
    hub.start_server("carol")
    with hub.gateway(token) as carol:
        name = carol.submit()
        assert carol.connect(name).status == "running"
        follows(hub, "carol")
        # Nobody uses carol's server: jupyterhub-idle-culler stops it after its timeout.
        wait_for(
            lambda: not hub.api("GET", "users/carol").json()["servers"],
            90,
            interval=0.5,
            what="the culler to stop carol's server",
        )
        wait_for(
            lambda: status(carol, name) == "STOPPED",
            GRACE + 30,
            interval=0.2,
            what="carol's cluster to stop",
        )
        reasons = [e["message"] for e in events_of(hub, token, name)]
        assert any("last server of its owner carol stopped" in m for m in reasons), reasons


def test_with_the_setting_off_clusters_survive_their_server(make_hub):
    hub = make_hub(
        gateway_config=WATCH + "c.DaskGateway.stop_clusters_when_server_stops = False\n",
    )
    token = hub.new_token("dave")["token"]
    hub.start_server("dave")
    with hub.gateway(token) as dave:
        name = dave.submit()
        assert dave.connect(name).status == "running"
        hub.stop_server("dave")
        # With the watch on, the cluster would stop within the grace period after a
        # poll; here it must still run after both have passed (an observation window,
        # not a wait for readiness).
        time.sleep(GRACE + 2)
        assert status(dave, name) == "RUNNING"
        assert "their clusters follow it" not in hub.log()
        dave.stop_cluster(name)


def test_a_user_who_loses_the_access_scope_loses_their_clusters(make_hub):
    # The admin redefined the user role: only the group "dask" may use the gateway.
    hub = make_hub(
        hub_config="""
        c.JupyterHub.load_groups = {"dask": {"users": ["alice", "bob"]}}
        c.JupyterHub.load_roles += [
            {"name": "user", "scopes": ["self"]},
            {
                "name": "dask-users",
                "groups": ["dask"],
                "scopes": ["access:services!service=dask-gateway"],
            },
            {"name": "test-admin-groups", "services": ["test-admin"], "scopes": ["admin:groups"]},
        ]
        """,
        gateway_config=WATCH + "c.DaskGateway.hub_access_check_period = 0.5\n",
    )
    alice_token, bob_token = hub.new_token("alice")["token"], hub.new_token("bob")["token"]
    with hub.gateway(alice_token) as alice, hub.gateway(bob_token) as bob:
        mine, theirs = alice.submit(), bob.submit()
        assert alice.connect(mine).status == "running"
        assert bob.connect(theirs).status == "running"
        r = hub.api("DELETE", "groups/dask/users", json={"users": ["alice"]})
        assert r.status_code == 200, r.text
        # alice's token cannot reach the gateway any more; the gateway's log says what
        # it did with her cluster.
        wait_for(
            lambda: f"Cluster {mine} stopped" in hub.log(),
            30,
            interval=0.2,
            what="alice's cluster to stop",
        )
        assert (
            f"Stopping cluster {mine} (because its owner alice lost access to the gateway)"
            in hub.log()
        )
        assert status(bob, theirs) == "RUNNING"
        bob.stop_cluster(theirs)
