"""The gateway as a JupyterHub managed service: a real Hub, its proxy, real clients.

One ``jupyterhub`` subprocess (with configurable-http-proxy, under the base URL
``/jupyter/``) serves the whole module. Its ``jupyterhub_config.py`` sets up the Hub (demo
password, local spawner, users and groups), calls ``configure_jupyterhub(c, ...)`` once and
adds gateway settings; nothing else about the gateway is configured. Users and their tokens
are made through the Hub's REST API:

- alice owns clusters; bob is a stranger to them; carol is in the ``analysts`` group and
  bob in ``interns`` (for sharing);
- hubadmin is a Hub admin; dave holds ``custom:dask-gateway:admin`` through a role of the
  ``dask-admins`` group.

Clients: the unmodified dask-gateway client with ``JupyterHubAuth`` at
``<hub>/services/dask-gateway``, plain HTTP for the gateway's own endpoints, a browser-like
cookie session for the OAuth login, and a kernel of a single-user server the Hub spawned.
The test that kills the service runs last: it leaves a restarted service behind.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlparse

import dask.array as da
import psutil
import pytest
import requests
import websocket
from aiohttp import ClientResponseError

from helpers import assert_invisible, wait_for

pytestmark = pytest.mark.timeout(180)

SERVICE = "dask-gateway"
CACHE_MAX_AGE = 3  # seconds the gateway trusts a checked Hub token (and its session cookie)
USERS = ("alice", "bob", "carol", "dave", "hubadmin")


@pytest.fixture(scope="module")
def hub(make_hub):
    """The module's Hub: users, groups and roles as in the module docstring."""
    return make_hub(
        hub_config="""
        c.Authenticator.admin_users = {"hubadmin"}
        c.JupyterHub.load_groups = {
            "analysts": {"users": ["carol"]},
            "interns": {"users": ["bob"]},
            "dask-admins": {"users": ["dave"]},
        }
        c.JupyterHub.load_roles += [
            {
                "name": "dask-admins",
                "groups": ["dask-admins"],
                "scopes": ["custom:dask-gateway:admin"],
            },
        ]
        """,
        gateway_config=f"""
        c.JupyterHubAuthenticator.cache_max_age = {CACHE_MAX_AGE}
        """,
        fast_service_restart=True,
        base_url="/jupyter/",  # services and servers live under the Hub's base URL
    )


@pytest.fixture(scope="module")
def tokens(hub):
    """An API token of each user, holding everything the user holds."""
    return {user: hub.new_token(user)["token"] for user in USERS}


def call(hub, token, method, path, scheme="jupyterhub", **kwargs) -> requests.Response:
    """The gateway's REST API through the Hub's proxy, with a Hub token."""
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return requests.request(
        method, f"{hub.gateway_url}/api/v1/{path}", headers=headers, timeout=30, **kwargs
    )


def wait_stopped(gateway, name):
    wait_for(
        lambda: gateway.get_cluster(name).status.name == "STOPPED",
        60,
        interval=0.2,
        what=f"cluster {name} to stop",
    )


def test_configure_jupyterhub_adds_and_keeps(tmp_path, monkeypatch):
    from traitlets.config import Config

    from jupyterhub_dask_gateway import configure_jupyterhub
    from jupyterhub_dask_gateway.auth import JupyterHubAuthenticator

    monkeypatch.delenv("JHDG_LOADING_CONFIG", raising=False)
    config_file = str(tmp_path / "jupyterhub_config.py")
    c = Config()
    c.JupyterHub.services = [{"name": "other", "api_token": "x" * 32}]
    c.JupyterHub.load_roles = [{"name": "mine", "users": ["ann"], "scopes": ["self"]}]
    c.Spawner.environment = {"DASK_GATEWAY__ADDRESS": "http://gw.internal/services/gw"}
    for _ in range(2):  # idempotent
        configure_jupyterhub(
            c,
            name="gw",
            url="http://127.0.0.1:9999",
            proxy_address="0.0.0.0:9998",
            public_proxy_address="hub.example.org:9998",
            hub_public_url="https://hub.example.org/",
            config_file=config_file,
            backend_class="slurm",
        )
    other, service = c.JupyterHub.services
    assert other["name"] == "other"
    assert service["name"] == "gw" and service["url"] == "http://127.0.0.1:9999"
    assert service["command"][-3:] == ["jupyterhub_dask_gateway.app", "--config", config_file]
    assert service["oauth_no_confirm"] is True
    assert service["oauth_client_allowed_scopes"] == ["custom:gw:admin"]
    assert set(c.JupyterHub.custom_scopes) == {"custom:gw:admin"}
    assert [r["name"] for r in c.JupyterHub.load_roles] == ["mine", "gw-service"]
    assert c.JupyterHub.load_roles[1]["services"] == ["gw"]
    assert c.JupyterHub.extra_user_scopes == {"access:services!service=gw"}
    assert c.Spawner.server_token_scopes == [
        "users:activity!user",
        "access:servers!server",
        "access:services!service=gw",
        "custom:gw:admin",
    ]
    assert c.Spawner.environment == {
        "DASK_GATEWAY__ADDRESS": "http://gw.internal/services/gw",  # the admin's, kept
        "DASK_GATEWAY__PUBLIC_ADDRESS": "https://hub.example.org/services/gw",
        "DASK_GATEWAY__PROXY_ADDRESS": "gateway://hub.example.org:9998",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    assert c.DaskGateway.backend_class == "slurm"
    assert c.DaskGateway.proxy_address == "0.0.0.0:9998"

    # without hub_public_url, notebooks use the Hub's own URL, base URL included
    for hub_settings, expected in [
        ({"bind_url": "http://10.0.0.5:8000/jh/"}, "http://10.0.0.5:8000/jh/services/gw"),
        (
            {"bind_url": "http://10.0.0.5:8000", "base_url": "/x/"},
            "http://10.0.0.5:8000/x/services/gw",
        ),
        ({}, "http://127.0.0.1:8000/services/gw"),
    ]:
        hub_only = Config()
        for key, value in hub_settings.items():
            setattr(hub_only.JupyterHub, key, value)
        configure_jupyterhub(hub_only, name="gw", config_file=config_file)
        assert hub_only.Spawner.environment["DASK_GATEWAY__ADDRESS"] == expected, hub_settings

    # the service (named gw by the Hub) honours the admin scope the call defined
    auth = JupyterHubAuthenticator(service_name="gw")
    assert auth.admin_scope == "custom:gw:admin"
    user = auth.user_from_model(
        {"name": "dave", "scopes": ["access:services!service=gw", "custom:gw:admin"]}
    )
    assert user.admin

    # inside the service, the same call only applies the gateway's settings
    monkeypatch.setenv("JHDG_LOADING_CONFIG", "1")
    inside = Config()
    configure_jupyterhub(inside, proxy_address="127.0.0.1:9998", backend_class="local")
    assert inside.DaskGateway.backend_class == "local"
    assert "Spawner" not in inside
    # ... and the one Hub setting the gateway reads: every user may use it (hub_watch.py).
    assert dict(inside.JupyterHub) == {
        "extra_user_scopes": {"access:services!service=dask-gateway"}
    }


def test_client_lifecycle_and_isolation(hub, tokens):
    with hub.gateway(tokens["alice"]) as alice, hub.gateway(tokens["bob"]) as bob:
        cluster = alice.new_cluster()
        try:
            assert cluster.status == "running"
            assert cluster.dashboard_link == f"{hub.gateway_url}/clusters/{cluster.name}/status"
            assert [c.name for c in alice.list_clusters()] == [cluster.name]
            cluster.scale(2)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(2, timeout=60)
                x = da.ones((1000, 1000), chunks=(250, 250))
                assert client.compute(x.sum()).result() == 1_000_000
                assert client.submit(lambda v: v + 1, 41).result() == 42

                # The scheduler runs as alice's own account, without the service's secrets.
                def who():
                    import os

                    return os.getuid(), sorted(os.environ)

                uid, variables = client.run_on_scheduler(who)
                assert uid == pwd.getpwnam("alice").pw_uid
                assert not [v for v in variables if v.startswith(("JUPYTERHUB_", "JHDG_PROXY"))]

                # bob can neither see, connect to, scale nor stop alice's cluster
                assert_invisible(bob, cluster.name, 3)
                r = call(hub, tokens["bob"], "GET", f"cluster-details/{cluster.name}")
                assert r.status_code == 404
                assert alice.get_cluster(cluster.name).status.name == "RUNNING"
                assert len(client.scheduler_info()["workers"]) == 2
        finally:
            cluster.shutdown()
        wait_stopped(alice, cluster.name)
        assert alice.list_clusters() == []


def test_every_token_scheme_and_missing_scope(hub, tokens):
    for scheme in ("jupyterhub", "token", "Bearer"):
        r = call(hub, tokens["alice"], "GET", "whoami", scheme=scheme)
        assert r.status_code == 200, scheme
        assert r.json() == {"name": "alice", "groups": [], "admin": False}

    anonymous = call(hub, None, "GET", "clusters/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "jupyterhub"

    # A valid Hub token of alice's that lacks access:services!service=dask-gateway
    narrow = hub.new_token("alice", scopes=["read:users:name!user=alice"])["token"]
    r = call(hub, narrow, "GET", "clusters/")
    assert r.status_code == 403
    assert "access:services!service=dask-gateway" in r.json()["error"]
    with hub.gateway(narrow) as gateway:
        with pytest.raises(ClientResponseError) as info:
            gateway.list_clusters()
        assert info.value.status == 403


def test_revoked_token_stops_working_within_the_cache_age(hub):
    issued = hub.new_token("alice")
    with hub.gateway(issued["token"]) as gateway:
        assert gateway.list_clusters() == []
        r = hub.api("DELETE", f"users/alice/tokens/{issued['id']}")
        assert r.status_code == 204
        revoked = time.monotonic()

        def refused():
            try:
                gateway.list_clusters()
            except ClientResponseError as exc:
                return exc.status == 401
            return False

        wait_for(refused, CACHE_MAX_AGE + 10, interval=0.2, what="the revoked token to fail")
        assert time.monotonic() - revoked < CACHE_MAX_AGE + 2
    assert call(hub, issued["token"], "GET", "clusters/").status_code == 401


def test_admins_see_and_stop_everyones_clusters(hub, tokens):
    with (
        hub.gateway(tokens["alice"]) as alice,
        hub.gateway(tokens["bob"]) as bob,
        hub.gateway(tokens["hubadmin"]) as hubadmin,
        hub.gateway(tokens["dave"]) as dave,
    ):
        a, b = alice.submit(), bob.submit()
        try:
            for admin in ("hubadmin", "dave"):
                assert call(hub, tokens[admin], "GET", "whoami").json()["admin"] is True, admin
                r = call(hub, tokens[admin], "GET", "cluster-details/?all=1")
                assert r.status_code == 200, admin
                owners = {d["name"]: d["owner"] for d in r.json()["clusters"]}
                assert owners == {a: "alice", b: "bob"}, admin
            # the client's own listing keeps its format: one's own clusters only
            assert hubadmin.list_clusters() == [] and dave.list_clusters() == []
            # and nobody else gets the admin listing
            assert call(hub, tokens["alice"], "GET", "cluster-details/?all=1").status_code == 403

            hubadmin.stop_cluster(a)
            dave.stop_cluster(b)
            wait_stopped(alice, a)
            wait_stopped(bob, b)
        finally:
            alice.stop_cluster(a)
            bob.stop_cluster(b)


# --- a kernel in a single-user server the Hub spawned ----------------------------------------

NOTEBOOK_CODE = """
from dask_gateway import Gateway

gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=60)
print("ADDRESS", gateway.address)
print("CLUSTER", cluster.name)
print("RESULT", client.submit(lambda x: x + 1, 41).result())
client.close()
cluster.shutdown()
gateway.close()
"""


def execute_in_kernel(ws, code, timeout=120) -> tuple[str, dict]:
    """Run ``code`` through a kernel's websocket: (stdout text, execute_reply content)."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "date": datetime.now(UTC).isoformat(),
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out, reply, idle = [], None, False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        ws.settimeout(max(deadline - time.monotonic(), 0.1))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif kind == "execute_reply":
            reply = msg["content"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return "".join(out), reply


def run_in_kernel(hub, user, token, code) -> str:
    """Spawn ``user``'s server, run ``code`` in a new kernel, stop the server; the output."""
    hub.start_server(user)
    try:
        auth = {"Authorization": f"token {token}"}
        r = requests.post(f"{hub.url}/user/{user}/api/kernels", headers=auth, json={}, timeout=30)
        assert r.status_code == 201, r.text
        ws = websocket.create_connection(
            f"{hub.ws_url}/user/{user}/api/kernels/{r.json()['id']}/channels",
            header=[f"Authorization: token {token}"],
            timeout=60,
        )
        try:
            out, reply = execute_in_kernel(ws, code)
        finally:
            ws.close()
        assert reply["status"] == "ok", out
        return out
    finally:
        hub.stop_server(user)


def test_notebook_kernel_with_zero_config(hub, tokens):
    token = tokens["alice"]
    out = run_in_kernel(hub, "alice", token, NOTEBOOK_CODE)
    assert f"ADDRESS {hub.gateway_url}" in out
    assert "RESULT 42" in out
    name = re.search(r"CLUSTER (\w+)", out).group(1)
    # the kernel's cluster was alice's (made with her server's token), and it is gone
    with hub.gateway(token) as alice:
        wait_stopped(alice, name)


# --- dashboards behind the Hub's login ----------------------------------------------------


def bokeh_websocket(hub, name, page, cookies):
    """Open the status page's Bokeh websocket through the Hub's proxy; return the first reply."""
    token = re.search(r'"token":"([^"]+)"', page).group(1)
    ws = websocket.create_connection(
        f"{hub.ws_url}/services/{SERVICE}/clusters/{name}/status/ws",
        subprotocols=["bokeh", token],
        cookie="; ".join(f"{c.name}={c.value}" for c in cookies),
        timeout=30,
    )
    try:
        assert ws.subprotocol == "bokeh"
        header = json.loads(ws.recv())  # a Bokeh message: header, metadata, content
        ws.recv()
        ws.recv()
        return header
    finally:
        ws.close()


def test_dashboard_behind_hub_oauth(hub, tokens):
    with hub.gateway(tokens["alice"]) as alice:
        cluster = alice.new_cluster(shared_groups="analysts")
        try:
            path = f"/services/{SERVICE}/clusters/{cluster.name}/status"
            assert cluster.dashboard_link == hub.url + path

            # logged out: sent to the Hub's login (through its OAuth authorize endpoint)
            first = requests.get(hub.url + path, allow_redirects=False, timeout=30)
            assert first.status_code == 302
            location = urlparse(first.headers["Location"]).path
            assert location == urlparse(f"{hub.url}/hub/api/oauth2/authorize").path
            landed = requests.get(hub.url + path, timeout=30)
            assert landed.url.startswith(f"{hub.url}/hub/login?")
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(f"{hub.ws_url}{path}/ws", timeout=30)
            assert refused.value.status_code == 401

            # alice logs in and is sent back to the dashboard, then its websocket works
            page = hub.login("alice", next_path=path)
            assert page.status_code == 200
            assert page.url == hub.url + path
            assert "Bokeh" in page.text and "render_items" in page.text
            assert any(r.url.startswith(f"{hub.gateway_url}/oauth_callback") for r in page.history)
            header = bokeh_websocket(hub, cluster.name, page.text, page.session.cookies)
            assert header["msgtype"] == "ACK"

            # carol is in the group the cluster is shared with
            page = hub.login("carol", next_path=path)
            assert page.status_code == 200 and "Bokeh" in page.text

            # bob is not: the dashboard says plainly that it is not his to open
            page = hub.login("bob", next_path=path)
            assert page.url == hub.url + path
            assert page.status_code == 403
            assert page.json() == {"error": f"User bob may not view cluster {cluster.name}"}
        finally:
            cluster.shutdown()


# --- sharing with Hub groups ------------------------------------------------------------------


def compute_on(gateway, name) -> int:
    """Connect to a cluster by name (without stopping it afterwards) and compute."""
    cluster = gateway.connect(name)
    try:
        with cluster.get_client(set_as_default=False) as client:
            return client.submit(lambda v: v * 2, 21).result()
    finally:
        cluster.close()


def test_sharing_with_groups(hub, tokens):
    with (
        hub.gateway(tokens["alice"]) as alice,
        hub.gateway(tokens["carol"]) as carol,
        hub.gateway(tokens["bob"]) as bob,
    ):
        cluster = alice.new_cluster(shared_groups="analysts")
        name = cluster.name
        try:
            cluster.scale(1)
            # carol (analysts) sees it, connects and computes; she may not manage it
            assert [c.name for c in carol.list_clusters()] == [name]
            assert compute_on(carol, name) == 42
            with pytest.raises(ClientResponseError) as info:
                carol.stop_cluster(name)
            assert info.value.status == 403
            with pytest.raises(ClientResponseError) as info:
                carol.scale_cluster(name, 3)
            assert info.value.status == 403
            r = call(hub, tokens["carol"], "PATCH", f"clusters/{name}", json={"shared_groups": []})
            assert r.status_code == 403
            # bob (interns) cannot see it
            assert bob.list_clusters() == []
            with pytest.raises(ValueError, match="not found"):
                bob.connect(name)

            # the owner shares it with interns instead: now bob can, carol cannot
            r = call(
                hub,
                tokens["alice"],
                "PATCH",
                f"clusters/{name}",
                json={"shared_groups": ["interns"]},
            )
            assert r.status_code == 200
            assert r.json()["shared_groups"] == ["interns"]
            assert compute_on(bob, name) == 42
            assert carol.list_clusters() == []
            with pytest.raises(ValueError, match="not found"):
                carol.connect(name)
            assert alice.get_cluster(name).status.name == "RUNNING"
        finally:
            cluster.shutdown()
        wait_stopped(alice, name)


# --- the service killed: the Hub restarts it, clusters and connections survive ----------------


def test_service_killed_and_restarted_by_the_hub(hub, tokens):
    def slow_identity(i):  # defined here: pickled by value, workers cannot import this module
        import time

        time.sleep(0.05)
        return i

    with hub.gateway(tokens["alice"]) as alice:
        cluster = alice.new_cluster()
        client = cluster.get_client(set_as_default=False)
        try:
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)
            proxy_pid = int((hub.state_dir / "proxy.pid").read_text())
            service = psutil.Process(hub.service_pid())

            futures = client.map(slow_identity, range(100))  # ~5 s on one worker
            os.kill(service.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert not all(f.done() for f in futures)
            # the computation in flight finishes through the proxy, which outlives the service
            assert sum(client.gather(futures)) == sum(range(100))
            assert client.submit(lambda v: v + 1, 1).result() == 2
            service.wait(10)

            def restarted():
                pid = hub.service_pid()
                return pid != service.pid and alice.get_cluster(cluster.name)

            report = wait_for(restarted, 45, interval=0.25, what="the Hub to restart the service")
            print(f"service answering again {time.monotonic() - killed:.1f}s after SIGKILL")
            assert report.status.name == "RUNNING"
            assert psutil.pid_exists(proxy_pid)
            assert int((hub.state_dir / "proxy.pid").read_text()) == proxy_pid
            assert [c.name for c in alice.list_clusters()] == [cluster.name]

            # the re-attached cluster still scales, and the old connection still computes
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            assert sum(client.gather(client.map(slow_identity, range(10)))) == sum(range(10))
        finally:
            client.close()
            cluster.shutdown()
        wait_stopped(alice, cluster.name)
