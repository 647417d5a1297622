"""The Jupyter server extension (``server_extension``): kernel environment and the relay.

The relay runs in a real Jupyter server (pytest-jupyter's ``jp_fetch``). The first tests
drive it against a real gateway process (the ``gateway`` fixture: CLI, Basic auth, local
backend): a cluster's whole life through the relay, another user's cluster, bad options,
the gateway going away. The rest use a small tornado stand-in that speaks the same REST
API and records what it was sent, for what a real gateway will not do on demand (fail
with a 500, lack the cluster-details API, reject the Hub token).

pytest-jupyter drives its own event loop (``jp_asyncio_loop``), so these tests are plain
functions that run coroutines on it rather than pytest-asyncio tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

# pytest-jupyter's fixtures (jp_fetch, jp_serverapp and what they need), for this module
# only: as a plugin its autouse event-loop fixtures and call hook would reach every test.
from pytest_jupyter.jupyter_server import *  # noqa: E402, F403
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from jupyterhub_dask_gateway.server_extension.app import KERNEL_ENV_KEYS, DaskGatewayExtension
from jupyterhub_dask_gateway.server_extension.gateway import dashboard_url, panel_cluster

EXTENSION = "jupyterhub_dask_gateway.server_extension"  # the name Jupyter enables it by
TOKEN = "hub-token-for-alice"
KEY = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n"
PASSWORD = "relay-test-password"
DEFAULT = object()
KERNEL_VARS = list(KERNEL_ENV_KEYS)


# --- a stand-in gateway -----------------------------------------------------------------


class FakeGatewayState:
    """What the stand-in serves and what it was asked."""

    def __init__(self):
        self.clusters = {}
        self.requests = []
        self.details = True  # serve /api/v1/cluster-details (our gateway) or not (upstream)
        self.events = {}  # cluster name -> the events the gateway answers with
        self.logs = {}  # (cluster name, process) -> log text
        self.fail_with = None  # (status, body) to answer every API call with

    def add(self, name, owner="alice", status="RUNNING", **extra):
        self.clusters[name] = {
            "name": name,
            "owner": owner,
            "status": status,
            "start_time": int(time.time() * 1000) - 90_000,
            "stop_time": None,
            "options": {"worker_cores": 1},
            "dashboard_route": f"/services/dask-gateway/clusters/{name}/status",
            "workers": 2,
            "threads": 4,
            "cores": 2.0,
            "memory": 2 * 2**30,
            "target_workers": 2,
            "adaptive": None,
            "shared_groups": [],
            "reason": "",
            # the real details API has no TLS fields; these prove the relay's allow-list
            "tls_key": KEY,
            "tls_cert": CERT,
            **extra,
        }


class FakeHandler(web.RequestHandler):
    def initialize(self, state):
        self.state = state

    def prepare(self):
        self.state.requests.append(
            (self.request.method, self.request.uri, self.request.headers.get("Authorization"))
        )
        if self.request.path.endswith("/api/version"):
            return
        if self.request.headers.get("Authorization") != f"token {TOKEN}":
            self.set_status(401)
            self.set_header("WWW-Authenticate", "jupyterhub")
            self.finish({"error": "Authentication required"})
        elif self.state.fail_with:
            self.set_status(self.state.fail_with[0])
            self.finish(self.state.fail_with[1])

    def body(self):
        return json.loads(self.request.body or b"{}")

    def cluster(self, name):
        if name not in self.state.clusters:
            raise web.HTTPError(404)
        return self.state.clusters[name]

    def write_error(self, status_code, **kwargs):
        self.finish({"error": f"Cluster not found ({status_code})"})


class WhoAmI(FakeHandler):
    def get(self):
        self.finish({"name": "alice", "groups": [], "admin": False})


class Version(FakeHandler):
    def get(self):
        self.finish({"version": "fake"})


class Options(FakeHandler):
    def get(self):
        spec = [{"field": "worker_cores", "label": "Cores", "default": 1, "spec": {"type": "int"}}]
        self.finish({"cluster_options": spec})


class Details(FakeHandler):
    def get(self, name=None):
        if not self.state.details:
            raise web.HTTPError(404)
        if name:
            self.finish(self.cluster(name))
        else:
            self.finish({"clusters": list(self.state.clusters.values())})


class Clusters(FakeHandler):
    def get(self, name=None):
        wire = ("name", "dashboard_route", "status", "start_time", "stop_time", "options")
        models = {
            n: {**{k: c[k] for k in wire}, "tls_key": KEY, "tls_cert": CERT}
            for n, c in self.state.clusters.items()
        }
        self.finish(models[self.cluster(name)["name"]] if name else models)

    def post(self, name=None):
        options = self.body().get("cluster_options")
        if options.get("worker_cores", 1) > 4:
            self.set_status(422)
            return self.finish({"error": "worker_cores must be <= 4, got 8"})
        new = f"c{len(self.state.clusters) + 1}"
        self.state.add(new, status="PENDING", options=options)
        self.set_status(201)
        self.finish({"name": new})

    def delete(self, name):
        if name in self.state.clusters:
            self.state.clusters[name]["status"] = "STOPPING"
        self.set_status(204)


class Scale(FakeHandler):
    def post(self, name):
        cluster = self.cluster(name)
        count = self.body()["count"]
        if count > 3:
            cluster["target_workers"] = 3
            return self.finish({"ok": False, "msg": "Scaling to 3 instead."})
        cluster["target_workers"] = count
        self.finish({"ok": True, "msg": None})


class Adapt(FakeHandler):
    def post(self, name):
        self.cluster(name)["adaptive"] = {k: self.body()[k] for k in ("minimum", "maximum")}
        self.finish({"ok": True, "msg": None})


class Events(FakeHandler):
    def get(self, name):
        self.cluster(name)
        self.finish({"events": self.state.events.get(name, [])})


class Logs(FakeHandler):
    def get(self, name):
        self.cluster(name)
        process = self.get_query_argument("process", "scheduler")
        processes = sorted({p for (n, p) in self.state.logs if n == name})
        if (name, process) not in self.state.logs:
            self.set_status(404)
            return self.finish({"error": f"No log of {process} in cluster {name}"})
        lines = self.state.logs[name, process].splitlines()
        tail = int(self.get_query_argument("tail", "100"))
        text = "\n".join(lines[-tail:])
        # an extra field stands for whatever the gateway may add later
        self.finish({"process": process, "text": text, "processes": processes, "path": "/x"})


def fake_gateway_app(state, prefix="/services/dask-gateway"):
    kw = {"state": state}
    return web.Application(
        [
            (prefix + "/api/version", Version, kw),
            (prefix + "/api/v1/whoami", WhoAmI, kw),
            (prefix + "/api/v1/options", Options, kw),
            (prefix + "/api/v1/cluster-details/?", Details, kw),
            (prefix + "/api/v1/cluster-details/([^/]+)", Details, kw),
            (prefix + "/api/v1/clusters/?", Clusters, kw),
            (prefix + "/api/v1/clusters/([^/]+)/scale", Scale, kw),
            (prefix + "/api/v1/clusters/([^/]+)/adapt", Adapt, kw),
            (prefix + "/api/v1/clusters/([^/]+)/events", Events, kw),
            (prefix + "/api/v1/clusters/([^/]+)/logs", Logs, kw),
            (prefix + "/api/v1/clusters/([^/]+)", Clusters, kw),
        ]
    )


@pytest.fixture
def fake_gateway(jp_asyncio_loop):
    """A stand-in gateway on 127.0.0.1 (on pytest-jupyter's loop): (state, API URL)."""
    state = FakeGatewayState()
    sock, port = bind_unused_port()

    async def start():
        server = HTTPServer(fake_gateway_app(state))
        server.add_socket(sock)
        return server

    server = jp_asyncio_loop.run_until_complete(start())
    yield state, f"http://127.0.0.1:{port}/services/dask-gateway"
    server.stop()
    jp_asyncio_loop.run_until_complete(server.close_all_connections())


@pytest.fixture
def relay_gateway(make_gateway):
    """A real gateway from its CLI (Basic auth, local backend) with a password we know."""
    return make_gateway(extra=f"c.BasicAuthenticator.password = {PASSWORD!r}\n")


@pytest.fixture
def dead_address():
    """A 127.0.0.1 URL where nothing listens."""
    sock, port = bind_unused_port()
    sock.close()
    return f"http://127.0.0.1:{port}/services/dask-gateway"


@pytest.fixture
def extension_config(request, fake_gateway, dead_address):
    """DaskGatewayExtension settings pointing at the stand-in.

    Parametrize it indirectly with a dict of overrides; ``"address": "dead"`` means a port
    where nothing listens, and the value ``DEFAULT`` removes a setting so the trait's
    default (from the environment) applies.
    """
    config = {
        "address": fake_gateway[1],
        "public_address": "https://hub.example.org/services/dask-gateway",
        "proxy_address": "hub.example.org:8786",
        "auth_type": "jupyterhub",
        "api_token": TOKEN,
        "set_kernel_env": False,
        "request_timeout": 5.0,
    }
    config.update(getattr(request, "param", {}))
    config = {k: v for k, v in config.items() if v is not DEFAULT}
    if config.get("address") == "dead":
        config["address"] = dead_address
    if config.get("address") == "real":
        gw = request.getfixturevalue("relay_gateway")
        config.update(
            address=gw.address,
            public_address=gw.address,
            auth_type="basic",
            basic_password=PASSWORD,
        )
        config.setdefault("basic_username", "alice")
    return config


def configured(**overrides):
    return pytest.mark.parametrize("extension_config", [overrides], indirect=True)


@pytest.fixture
def jp_server_config(extension_config):
    """pytest-jupyter's server config, with only our extension enabled."""
    return {
        "ServerApp": {"jpserver_extensions": {EXTENSION: True}},
        "DaskGatewayExtension": extension_config,
    }


@pytest.fixture
def relay(jp_fetch, jp_asyncio_loop):
    """Call the relay synchronously: ``relay(method, path, body=None)`` -> (status, JSON)."""

    def call(method, path, body=None, params=None, expect_error=False):
        kwargs = {"method": method, "params": params}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str) else json.dumps(body)
        elif method == "POST":
            kwargs["body"] = "{}"
        try:
            resp = jp_asyncio_loop.run_until_complete(jp_fetch("dask-gateway", path, **kwargs))
        except HTTPClientError as e:
            if not expect_error:
                raise
            resp = e.response
        data = json.loads(resp.body) if resp.body else None
        return resp.code, data

    return call


# --- the relay against a real gateway -----------------------------------------------------


@pytest.fixture
def wait_relay(relay, jp_asyncio_loop):
    """``wait_relay(path, predicate, what)``: poll the relay until ``predicate(code, data)``
    holds (``params``: the query).

    Sleeps on pytest-jupyter's loop so the Jupyter server keeps serving meanwhile.
    """

    def wait(path, predicate, what, timeout=60, params=None):
        deadline = time.monotonic() + timeout
        while True:
            code, data = relay("GET", path, params=params, expect_error=True)
            if predicate(code, data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last: {code} {data}")
            jp_asyncio_loop.run_until_complete(asyncio.sleep(0.25))

    return wait


@configured(address="real")
def test_real_gateway_cluster_lifecycle(relay, wait_relay, relay_gateway):
    seen = []  # every reply the browser would have received

    def call(*args, **kwargs):
        code, data = relay(*args, **kwargs)
        seen.append(json.dumps(data))
        return code, data

    code, config = call("GET", "config", params={"check": "1"})
    assert config["configured"] and config["gateway_version"]
    assert config["user"] == "alice"  # the gateway's name for us, not the Jupyter user
    code, options = call("GET", "options")
    assert code == 200 and isinstance(options["cluster_options"], list)
    assert call("GET", "clusters") == (200, {"clusters": []})

    code, created = call("POST", "clusters", {"cluster_options": {}})
    assert code == 201
    name = created["name"]
    running = wait_relay(f"clusters/{name}", lambda c, d: d["status"] == "RUNNING", "RUNNING")
    seen.append(json.dumps(running))
    assert running["owner"] == "alice"
    assert running["dashboard_url"] == f"{relay_gateway.address}/clusters/{name}/status"

    assert call("POST", f"clusters/{name}/scale", {"count": 1}) == (200, {"ok": True, "msg": None})
    one = wait_relay(f"clusters/{name}", lambda c, d: d["workers"] == 1, "one worker")
    seen.append(json.dumps(one))
    assert one["target_workers"] == 1
    assert one["threads"] >= 1 and one["cores"] >= 1 and one["memory"] > 0
    (listed,) = call("GET", "clusters")[1]["clusters"]
    assert listed["name"] == name and listed["workers"] == 1 and listed["age"] >= 0

    code, reply = call("POST", f"clusters/{name}/adapt", {"minimum": 0, "maximum": 2})
    assert code == 200 and reply["ok"] is True
    adaptive = wait_relay(f"clusters/{name}", lambda c, d: d["adaptive"], "adaptive")
    assert adaptive["adaptive"] == {"minimum": 0, "maximum": 2}

    # the gateway's own model carries the cluster's TLS key (the client needs it) ...
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    direct = urllib.request.urlopen(
        urllib.request.Request(
            f"{relay_gateway.address}/api/v1/clusters/{name}",
            headers={"Authorization": f"Basic {auth}"},
        ),
        timeout=10,
    ).read()
    assert b"PRIVATE KEY" in direct
    # ... which the relay never passes on
    assert not [r for r in seen if "PRIVATE KEY" in r or "CERTIFICATE" in r]

    assert call("DELETE", f"clusters/{name}") == (204, None)
    wait_relay("clusters", lambda c, d: not d["clusters"], "the cluster to go")


@configured(address="real", basic_username="bob")
def test_real_gateway_other_users_clusters_stay_hidden(relay, relay_gateway):
    with relay_gateway.gateway(user="alice", password=PASSWORD) as alice:
        name = alice.submit()
        try:
            # the gateway answers strangers as if the cluster did not exist
            code, data = relay("GET", f"clusters/{name}", expect_error=True)
            assert code == 404 and "not found" in data["error"]
            code, data = relay("POST", f"clusters/{name}/scale", {"count": 1}, expect_error=True)
            assert code == 404
            for path in ("events", "logs"):  # nor its history and logs
                code, data = relay("GET", f"clusters/{name}/{path}", expect_error=True)
                assert code == 404, path
            assert relay("GET", "clusters") == (200, {"clusters": []})
            # everyone's list is for admins only: a 403 with the gateway's reason
            code, data = relay("GET", "clusters", params={"all": "1"}, expect_error=True)
            assert code == 403 and "admin" in data["error"]
        finally:
            alice.stop_cluster(name)


@configured(address="real")
def test_real_gateway_bad_options_and_unknown_cluster(relay):
    code, data = relay("POST", "clusters", {"cluster_options": {"bogus": 1}}, expect_error=True)
    assert code == 422 and "bogus" in data["error"]
    code, data = relay("GET", "clusters/0123456789abcdef", expect_error=True)
    assert code == 404 and "not found" in data["error"]


@configured(address="real")
def test_real_gateway_events_and_logs(relay, wait_relay, relay_gateway):
    code, created = relay("POST", "clusters", {"cluster_options": {}})
    name = created["name"]
    try:
        wait_relay(f"clusters/{name}", lambda c, d: d["status"] == "RUNNING", "RUNNING")
        events = wait_relay(
            f"clusters/{name}/events",
            lambda c, d: c == 200 and "started" in {e["kind"] for e in d["events"]},
            "the started event",
        )["events"]
        assert [e["kind"] for e in events][:2] == ["created", "started"]
        assert all(set(e) == {"time", "kind", "message", "worker"} for e in events)
        assert events == sorted(events, key=lambda e: e["time"])
        logs = wait_relay(
            f"clusters/{name}/logs",
            lambda c, d: c == 200 and d["text"].strip(),
            "scheduler log lines",
            params={"tail": "20"},
        )
        assert logs["process"] == "scheduler" and "scheduler" in logs["processes"]
        assert 0 < len(logs["text"].splitlines()) <= 20
        code, data = relay(
            "GET", f"clusters/{name}/logs", params={"process": "ab" * 16}, expect_error=True
        )
        assert code == 404
    finally:
        relay("DELETE", f"clusters/{name}")


@configured(address="real")
def test_real_gateway_going_away_is_502(relay, relay_gateway):
    assert relay("GET", "clusters")[0] == 200
    relay_gateway.kill()
    code, data = relay("GET", "clusters", expect_error=True)
    assert code == 502 and data["error"].startswith("Cannot reach the Dask Gateway")


# --- packaging -----------------------------------------------------------------------------


def test_package_metadata_agrees():
    """The lab extension's package.json, the Python package and the config file match."""
    from jupyterhub_dask_gateway import server_extension
    from jupyterhub_dask_gateway._version import __version__

    repo = Path(__file__).resolve().parents[1]
    package = json.loads((repo / "package.json").read_text())
    assert package["version"] == __version__
    (paths,) = server_extension._jupyter_labextension_paths()
    assert package["name"] == paths["dest"] == "jupyterhub-dask-gateway"
    # the module's folder in this checkout (the module itself may be an installed copy)
    module_dir = EXTENSION.replace(".", "/")
    assert package["jupyterlab"]["outputDir"] == f"{module_dir}/{paths['src']}"
    config = json.loads((repo / module_dir / "etc" / "jupyter-config.json").read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {EXTENSION: True}}}
    (point,) = server_extension._jupyter_server_extension_points()
    assert point["module"] == EXTENSION and point["app"] is DaskGatewayExtension


# --- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route, public, expected",
    [
        (
            "/clusters/a/status",
            "/services/dask-gateway",
            "/services/dask-gateway/clusters/a/status",
        ),
        (
            "/services/dask-gateway/clusters/a/status",
            "/services/dask-gateway",
            "/services/dask-gateway/clusters/a/status",
        ),
        (
            "/services/dask-gateway/clusters/a/status",
            "https://hub.example.org/services/dask-gateway/",
            "https://hub.example.org/services/dask-gateway/clusters/a/status",
        ),
        ("/clusters/a/status", "http://127.0.0.1:9000", "http://127.0.0.1:9000/clusters/a/status"),
        ("https://elsewhere/x", "/services/dask-gateway", "https://elsewhere/x"),
        (None, "/services/dask-gateway", None),
    ],
)
def test_dashboard_url(route, public, expected):
    assert dashboard_url(route, public) == expected


def test_panel_cluster_allow_list():
    raw = {
        "name": "abc",
        "status": "running",
        "start_time": 1_000_000,
        "stop_time": None,
        "tls_key": KEY,
        "tls_cert": CERT,
        "api_token": "x",
        "workers": 3,
        "cores": 3,
        "memory": 10,
        "adaptive": {"minimum": 1, "maximum": 5, "secret": 1},
    }
    out = panel_cluster(raw, "/gw", now=1_060.5)
    assert out["status"] == "RUNNING"
    assert out["age"] == pytest.approx(60.5)
    assert out["cores"] == 3.0 and isinstance(out["cores"], float)
    assert out["adaptive"] == {"minimum": 1, "maximum": 5}
    text = json.dumps(out)
    assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text and "api_token" not in text


# --- kernel environment -------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DASK_GATEWAY__* or Hub variables, and a dask config path with nothing in it."""
    for var in [
        *KERNEL_VARS,
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_BASE_URL",
        "JUPYTERHUB_PUBLIC_HUB_URL",
        "DASK_GATEWAY__AUTH__KWARGS__PASSWORD",
    ]:
        monkeypatch.setenv(var, "placeholder")  # so the undo also removes what we add
        monkeypatch.delenv(var)
    import dask.config

    monkeypatch.setattr(dask.config, "paths", [str(tmp_path / "dask")])
    return tmp_path / "dask"


def test_kernel_env_under_hub(clean_env, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/prefix/")
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", "http://10.0.0.1:8000/prefix/services/dask-gateway")
    monkeypatch.setenv("DASK_GATEWAY__PROXY_ADDRESS", "10.0.0.1:8786")
    ext = DaskGatewayExtension()
    assert ext.auth_type == "jupyterhub"
    assert ext.public_address == "/prefix/services/dask-gateway"
    # address and proxy are already in the environment, so only the rest is exported
    assert ext.kernel_env() == {
        "DASK_GATEWAY__PUBLIC_ADDRESS": "/prefix/services/dask-gateway",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }


def test_kernel_env_from_traits_and_public_hub_url(clean_env, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_HUB_URL", "https://hub.example.org/jh/hub/")
    ext = DaskGatewayExtension(proxy_address="hub.example.org:8786")
    public = "https://hub.example.org/jh/services/dask-gateway"
    assert ext.address == public and ext.public_address == public
    assert ext.kernel_env() == {
        "DASK_GATEWAY__ADDRESS": public,
        "DASK_GATEWAY__PROXY_ADDRESS": "hub.example.org:8786",
        "DASK_GATEWAY__PUBLIC_ADDRESS": public,
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }


def test_kernel_env_respects_user_dask_config(clean_env, monkeypatch):
    clean_env.mkdir()
    (clean_env / "gateway.yaml").write_text(
        "gateway:\n  public_address: https://mine/\n  auth:\n    type: kerberos\n"
    )
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    ext = DaskGatewayExtension(address="http://gw:8000")
    assert ext.kernel_env() == {"DASK_GATEWAY__ADDRESS": "http://gw:8000"}


def test_kernel_env_nothing_without_address(clean_env, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    assert DaskGatewayExtension().address is None
    assert DaskGatewayExtension().kernel_env() == {}


def test_kernel_env_without_hub_token_sets_no_auth(clean_env):
    ext = DaskGatewayExtension(address="http://gw:8000")
    assert ext.kernel_env() == {
        "DASK_GATEWAY__ADDRESS": "http://gw:8000",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "http://gw:8000",
    }


@pytest.fixture
def hub_env(clean_env, monkeypatch):
    """The environment JupyterHub gives a spawned server (only what we read)."""
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/")
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", "http://127.0.0.1:8000/services/dask-gateway")


@configured(set_kernel_env=True, address=DEFAULT, public_address=DEFAULT, proxy_address=DEFAULT)
def test_server_exports_kernel_env(hub_env, jp_serverapp):
    assert os.environ["DASK_GATEWAY__ADDRESS"] == "http://127.0.0.1:8000/services/dask-gateway"
    assert os.environ["DASK_GATEWAY__PUBLIC_ADDRESS"] == "/services/dask-gateway"
    assert os.environ["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert "DASK_GATEWAY__PROXY_ADDRESS" not in os.environ


# --- the relay against the stand-in ------------------------------------------------------


def test_extension_loaded(jp_serverapp):
    assert EXTENSION in jp_serverapp.extension_manager.extensions
    assert jp_serverapp.extension_manager.extensions[EXTENSION].enabled


def test_config(relay, fake_gateway):
    code, data = relay("GET", "config", params={"check": "1"})
    assert code == 200
    assert data["configured"] is True and data["problem"] is None
    assert data["public_address"] == "https://hub.example.org/services/dask-gateway"
    assert data["gateway_version"] == "fake"
    assert data["user"] == "alice" and data["admin"] is False
    assert TOKEN not in json.dumps(data)


def test_list_adds_details_and_strips_keys(relay, fake_gateway):
    state, _ = fake_gateway
    state.add("abc")
    code, data = relay("GET", "clusters")
    assert code == 200
    (cluster,) = data["clusters"]
    assert cluster["name"] == "abc" and cluster["owner"] == "alice"
    assert cluster["workers"] == 2 and cluster["threads"] == 4 and cluster["cores"] == 2.0
    assert cluster["memory"] == 2 * 2**30
    assert cluster["dashboard_url"] == (
        "https://hub.example.org/services/dask-gateway/clusters/abc/status"
    )
    assert 89 <= cluster["age"] < 120
    assert "tls_key" not in cluster and "PRIVATE KEY" not in json.dumps(data)
    # the relay authenticated with the server's Hub token
    assert state.requests[-1] == (
        "GET",
        "/services/dask-gateway/api/v1/cluster-details/",
        f"token {TOKEN}",
    )


def test_list_all_for_admins_passes_flag(relay, fake_gateway):
    state, _ = fake_gateway
    state.add("a" * 32, owner="alice")
    state.add("b" * 32, owner="bob", status="FAILED", reason="Scheduler process exited")
    code, data = relay("GET", "clusters", params={"all": "1"})
    assert state.requests[-1][1].endswith("/api/v1/cluster-details/?all=1")
    # the admin's view needs the owner, and a failed cluster its reason
    owners = {c["owner"]: c for c in data["clusters"]}
    assert set(owners) == {"alice", "bob"}
    assert owners["bob"]["reason"] == "Scheduler process exited"
    assert "PRIVATE KEY" not in json.dumps(data)


def test_list_status_filter_passes_through(relay, fake_gateway):
    state, _ = fake_gateway
    relay("GET", "clusters", params={"all": "1", "status": "running,FAILED"})
    assert state.requests[-1][1].endswith("/cluster-details/?all=1&status=RUNNING%2CFAILED")
    before = len(state.requests)
    code, data = relay("GET", "clusters", params={"status": "RUNNING,BROKEN"}, expect_error=True)
    assert code == 400 and "status must be" in data["error"]
    assert len(state.requests) == before


CLUSTER = "0123456789abcdef0123456789abcdef"
WORKER = "fedcba9876543210fedcba9876543210"


def test_events_are_relayed_from_an_allow_list(relay, fake_gateway):
    state, _ = fake_gateway
    state.add(CLUSTER)
    state.events[CLUSTER] = [
        {"time": 1_700_000_000_000, "kind": "created", "message": "Created", "worker": None},
        {
            "time": 1_700_000_001_000,
            "kind": "worker_started",
            "message": "Worker started",
            "worker": WORKER,
            "token": "must-not-pass",
        },
    ]
    code, data = relay("GET", f"clusters/{CLUSTER}/events")
    assert code == 200
    assert data == {
        "events": [
            {"time": 1_700_000_000_000, "kind": "created", "message": "Created", "worker": None},
            {
                "time": 1_700_000_001_000,
                "kind": "worker_started",
                "message": "Worker started",
                "worker": WORKER,
            },
        ]
    }
    assert state.requests[-1][:2] == (
        "GET",
        f"/services/dask-gateway/api/v1/clusters/{CLUSTER}/events",
    )


def test_logs_are_relayed(relay, fake_gateway):
    state, _ = fake_gateway
    state.add(CLUSTER)
    state.logs[CLUSTER, "scheduler"] = "\n".join(f"line {i}" for i in range(10))
    state.logs[CLUSTER, WORKER] = "worker says hi"
    code, data = relay("GET", f"clusters/{CLUSTER}/logs", params={"tail": "3"})
    assert code == 200
    assert data == {
        "process": "scheduler",
        "text": "line 7\nline 8\nline 9",
        "processes": sorted(["scheduler", WORKER]),
    }
    assert state.requests[-1][1].endswith(f"/{CLUSTER}/logs?process=scheduler&tail=3")
    code, data = relay("GET", f"clusters/{CLUSTER}/logs", params={"process": WORKER})
    assert code == 200 and data["text"] == "worker says hi"
    assert state.requests[-1][1].endswith("&tail=100")  # the default
    # a process without a log: the gateway's 404 and its words
    code, data = relay(
        "GET", f"clusters/{CLUSTER}/logs", params={"process": "ab" * 16}, expect_error=True
    )
    assert code == 404 and "No log of" in data["error"]


def test_events_and_logs_of_a_cluster_not_ours(relay, fake_gateway):
    state, _ = fake_gateway
    state.add(CLUSTER, owner="bob")
    state.fail_with = (403, {"error": "Only the owner and admins may read this cluster's logs"})
    for path in ("events", "logs"):
        code, data = relay("GET", f"clusters/{CLUSTER}/{path}", expect_error=True)
        assert code == 403 and "owner and admins" in data["error"]


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("clusters/abc/events", None, "not a cluster name"),
        (f"clusters/{CLUSTER.upper()}/logs", None, "not a cluster name"),
        (f"clusters/{CLUSTER}x/logs", None, "not a cluster name"),
        (f"clusters/{CLUSTER}/logs", {"process": "Scheduler"}, "process must be"),
        (f"clusters/{CLUSTER}/logs", {"process": "../../etc"}, "process must be"),
        (f"clusters/{CLUSTER}/logs", {"process": ""}, "process must be"),
        (f"clusters/{CLUSTER}/logs", {"process": "a" * 65}, "process must be"),
        (f"clusters/{CLUSTER}/logs", {"tail": "0"}, "tail must be"),
        (f"clusters/{CLUSTER}/logs", {"tail": "1001"}, "tail must be"),
        (f"clusters/{CLUSTER}/logs", {"tail": "-1"}, "tail must be"),
        (f"clusters/{CLUSTER}/logs", {"tail": "ten"}, "tail must be"),
        (f"clusters/{CLUSTER}/logs", {"tail": "1e3"}, "tail must be"),
    ],
)
def test_bad_events_and_logs_requests_are_400(relay, fake_gateway, path, params, fragment):
    fake_gateway[0].add(CLUSTER)
    before = len(fake_gateway[0].requests)
    code, data = relay("GET", path, params=params, expect_error=True)
    assert code == 400 and fragment in data["error"]
    assert len(fake_gateway[0].requests) == before  # nothing reached the gateway


def test_list_falls_back_to_plain_gateway(relay, fake_gateway):
    state, _ = fake_gateway
    state.details = False
    state.add("abc")
    code, data = relay("GET", "clusters")
    assert code == 200
    (cluster,) = data["clusters"]
    assert cluster["name"] == "abc" and cluster["workers"] is None
    assert "PRIVATE KEY" not in json.dumps(data) and "CERTIFICATE" not in json.dumps(data)
    code, one = relay("GET", "clusters/abc")
    assert code == 200 and one["status"] == "RUNNING" and "tls_key" not in one


def test_get_one_and_unknown(relay, fake_gateway):
    fake_gateway[0].add("abc")
    code, data = relay("GET", "clusters/abc")
    assert code == 200 and data["name"] == "abc" and "tls_cert" not in data
    code, data = relay("GET", "clusters/nope", expect_error=True)
    assert code == 404 and "not found" in data["error"]


def test_options(relay):
    code, data = relay("GET", "options")
    assert code == 200 and data["cluster_options"][0]["field"] == "worker_cores"


def test_create_forwards_options(relay, fake_gateway):
    state, _ = fake_gateway
    code, data = relay("POST", "clusters", {"cluster_options": {"worker_cores": 2}})
    assert code == 201 and data == {"name": "c1"}
    assert state.clusters["c1"]["options"] == {"worker_cores": 2}


def test_create_invalid_options_shows_gateway_message(relay):
    code, data = relay(
        "POST", "clusters", {"cluster_options": {"worker_cores": 8}}, expect_error=True
    )
    assert code == 422 and data["error"] == "worker_cores must be <= 4, got 8"


@pytest.mark.parametrize(
    "path, body, fragment",
    [
        ("clusters", "not json", "not valid JSON"),
        ("clusters", [1], "JSON object"),
        ("clusters", {"cluster_options": [1]}, "cluster_options must be a JSON object"),
        ("clusters/abc/scale", {"count": -1}, "count must be a non-negative integer"),
        ("clusters/abc/scale", {"count": True}, "count must be a non-negative integer"),
        ("clusters/abc/scale", {}, "got null"),
        ("clusters/abc/adapt", {"minimum": 3, "maximum": 1}, "must not exceed"),
        ("clusters/abc/adapt", {"minimum": "1"}, "minimum must be"),
        ("clusters/abc/adapt", {"active": "yes"}, "active must be"),
    ],
)
def test_bad_input_is_400(relay, fake_gateway, path, body, fragment):
    fake_gateway[0].add("abc")
    before = len(fake_gateway[0].requests)
    code, data = relay("POST", path, body, expect_error=True)
    assert code == 400 and fragment in data["error"]
    assert len(fake_gateway[0].requests) == before  # nothing reached the gateway


def test_scale_adapt_stop(relay, fake_gateway):
    state, _ = fake_gateway
    state.add("abc")
    assert relay("POST", "clusters/abc/scale", {"count": 2}) == (200, {"ok": True, "msg": None})
    assert state.clusters["abc"]["target_workers"] == 2
    code, data = relay("POST", "clusters/abc/scale", {"count": 5})
    assert code == 200 and data == {"ok": False, "msg": "Scaling to 3 instead."}
    assert relay("POST", "clusters/abc/adapt", {"minimum": 1, "maximum": 4})[0] == 200
    assert state.clusters["abc"]["adaptive"] == {"minimum": 1, "maximum": 4}
    code, data = relay("DELETE", "clusters/abc")
    assert code == 204 and data is None
    assert state.clusters["abc"]["status"] == "STOPPING"


def test_names_are_quoted(relay, fake_gateway):
    state, _ = fake_gateway
    # jp_fetch escapes the name; the relay must escape it again, so '?' stays in the name
    code, _ = relay("GET", "clusters/a b?all=1", expect_error=True)
    assert code == 404
    assert state.requests[-1][1].endswith("/a%20b%3Fall%3D1")


def test_forbidden_passes_through(relay, fake_gateway):
    fake_gateway[0].fail_with = (403, {"error": "User alice lacks permissions to view cluster x"})
    code, data = relay("GET", "clusters/x", expect_error=True)
    assert code == 403 and "lacks permissions" in data["error"]


@configured(api_token="wrong")
def test_rejected_token_is_403_with_hint(relay):
    code, data = relay("GET", "clusters", expect_error=True)
    assert code == 403
    assert "rejected this server's credentials" in data["error"]
    assert "access:services" in data["error"]
    assert "wrong" not in json.dumps(data)


def test_gateway_error_is_502(relay, fake_gateway):
    fake_gateway[0].fail_with = (500, "Traceback (most recent call last): boom")
    code, data = relay("GET", "clusters", expect_error=True)
    assert code == 502 and "The Dask Gateway failed (500)" in data["error"]


@configured(address="dead")
def test_gateway_down_is_502(relay):
    code, data = relay("GET", "clusters", expect_error=True)
    assert code == 502 and data["error"].startswith("Cannot reach the Dask Gateway at ")
    code, data = relay("GET", "config", params={"check": "1"})
    assert code == 200 and "Cannot reach" in data["gateway_error"]


@configured(address=None)
def test_not_configured_is_503(relay):
    code, data = relay("GET", "clusters", expect_error=True)
    assert code == 503 and "No Dask Gateway is configured" in data["error"]
    code, data = relay("GET", "config")
    assert data["configured"] is False and "DASK_GATEWAY__ADDRESS" in data["problem"]


@configured(api_token="")
def test_no_hub_token_is_503(relay):
    code, data = relay("POST", "clusters", {}, expect_error=True)
    assert code == 503 and "JUPYTERHUB_API_TOKEN" in data["error"]


def test_relay_requires_login(jp_fetch, jp_asyncio_loop):
    with pytest.raises(HTTPClientError) as e:
        jp_asyncio_loop.run_until_complete(
            jp_fetch("dask-gateway", "clusters", headers={"Authorization": ""})
        )
    assert e.value.code == 403
