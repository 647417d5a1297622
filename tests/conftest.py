"""Shared fixtures: real gateways and a real JupyterHub on 127.0.0.1, cleaned up after use.

``make_gateway`` starts standalone gateways from their CLI. ``make_hub`` starts a real
``jupyterhub`` subprocess with configurable-http-proxy whose ``jupyterhub_config.py`` is what
an admin would write: Hub settings, one ``configure_jupyterhub(c, ...)`` call, then gateway
settings (``tests/test_hub.py`` and the browser tests in ``tests/ui/`` use it).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

try:
    # Imported now, while nothing is waiting to be finalized: hypothesis's pytest plugin
    # imports it lazily during a test, and pytest's assertion rewriting of it could then
    # run a client finalizer mid-parse (CPython gh-106905 on Debian's 3.11.2).
    import hypothesis  # noqa: F401
except ImportError:
    pass

# Plain helpers live in a module of their own, so test modules can import them whatever
# conftest.py pytest loaded last (tests/ui has one too); they are re-exported here.
# The cluster manager's unit-test fixtures (``make_manager``, ``clock``).
from fakes import clock, make_manager  # noqa: F401
from helpers import (
    PASSWORD,
    TEST_ACCOUNTS,
    ensure_account,
    free_port,
    kill_all,
    open_to_accounts,
    port_open,
    processes_of,
    processes_under,
    wait_for,
)

VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="session", autouse=True)
def accounts():
    """The test users' system accounts (``TEST_ACCOUNTS``), created once if missing.

    Clusters and single-user servers run as their owner's account, as in the demo.
    """
    if os.geteuid() != 0:
        pytest.skip("the tests run as root: they create accounts and run the Hub")
    return {name: ensure_account(name) for name in TEST_ACCOUNTS}


@pytest.fixture
def tmp_path(tmp_path):
    """pytest's ``tmp_path``, passable (not readable) by the test accounts."""
    return open_to_accounts(tmp_path)


class GatewayProcess:
    """A gateway started from its CLI (``jupyterhub-dask-gateway --config FILE``)."""

    def __init__(
        self, directory: Path, config: str, api_port: int, proxy_port: int, api_host="127.0.0.1"
    ):
        self.directory = directory
        self.api_host = api_host
        self.state_dir = str(directory / "state")
        self.api_port = api_port
        self.proxy_port = proxy_port
        self.config_path = directory / "gateway_config.py"
        self.config_path.write_text(config)
        self.log_path = directory / "gateway.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The public address: the proxy port also serves the HTTP API."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def api_address(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_address(self) -> str:
        return f"gateway://127.0.0.1:{self.proxy_port}"

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "jupyterhub-dask-gateway"),
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()[-3000:]}")
            return port_open(self.api_port, self.api_host) and port_open(self.proxy_port)

        wait_for(ready, timeout, what="the gateway to listen")
        return self

    def api_json(self, path: str, user="alice", password=PASSWORD):
        """``GET api/v1/<path>`` as ``user`` (Basic auth), decoded."""
        resp = requests.get(f"{self.address}/api/v1/{path}", auth=(user, password), timeout=30)
        resp.raise_for_status()
        return resp.json()

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def gateway(self, user="alice", password=PASSWORD, **kwargs):
        from dask_gateway import BasicAuth, Gateway

        return Gateway(self.address, auth=BasicAuth(user, password), **kwargs)

    def cleanup(self):
        self.kill(signal.SIGKILL)
        kill_all(processes_under(self.state_dir))


def gateway_config(state_dir, api_port, proxy_port, extra="", api_host="127.0.0.1"):
    return textwrap.dedent(f"""
        c.DaskGateway.address = "{api_host}:{api_port}"
        c.DaskGateway.proxy_address = "127.0.0.1:{proxy_port}"
        c.DaskGateway.state_dir = {str(state_dir)!r}
        c.DaskGateway.authenticator_class = "basic"
        c.BasicAuthenticator.password = {PASSWORD!r}
        c.DaskGateway.cluster_heartbeat_period = 2
        c.ClusterConfig.worker_memory = "512 M"
        c.ClusterConfig.scheduler_memory = "512 M"
        c.LocalBackend.warm_pool_size = 1
        c.LocalBackend.sigint_timeout = 3
    """) + textwrap.dedent(extra)


@pytest.fixture
def make_gateway(tmp_path):
    """Factory: ``make_gateway(extra_config="...")`` starts a gateway from its CLI.

    Every gateway, its proxy and every cluster process it started are killed at
    teardown, whatever the test did.
    """
    started: list[GatewayProcess] = []

    def factory(extra="", start=True, directory=None, api_host="127.0.0.1") -> GatewayProcess:
        d = directory or tmp_path / f"gw{len(started)}"
        d.mkdir(exist_ok=True)
        api, proxy = free_port(), free_port()
        config = gateway_config(d / "state", api, proxy, extra, api_host)
        gw = GatewayProcess(d, config, api, proxy, api_host)
        started.append(gw)
        return gw.start() if start else gw

    yield factory
    for gw in started:
        gw.cleanup()


@pytest.fixture
def gateway(make_gateway):
    """One running standalone gateway with Basic auth and the local backend."""
    return make_gateway()


# --- a real JupyterHub ---------------------------------------------------------------------

HUB_PASSWORD = "hub-test-password"
SERVICE = "dask-gateway"

# The Hub polls a managed service's process every 30 s and only then restarts it. That
# interval is not configurable (the service's spawner is built without config), so the
# tests that kill the service shorten it here; nothing else about the Hub changes.
FAST_SERVICE_RESTART = """
import jupyterhub.services.service as _jh_service
from traitlets import Integer as _Integer


class _QuickPollServiceSpawner(_jh_service._ServiceSpawner):
    poll_interval = _Integer(1)


_jh_service._ServiceSpawner = _QuickPollServiceSpawner
"""


class Hub:
    """A ``jupyterhub`` subprocess whose config calls ``configure_jupyterhub``.

    Parameters
    ----------
    directory : Path
        Working directory: config, databases, logs, users' homes, gateway state.
    hub_config : str
        Lines placed before ``configure_jupyterhub`` (Hub, spawner and role settings
        the call must merge with).
    gateway_config : str
        Lines placed after it (``c.DaskGateway...``, ``c.ClusterConfig...``, ...).
    fast_service_restart : bool
        Poll the managed service every second instead of every 30 s.
    base_url : str
        The Hub's base URL (``/`` or e.g. ``/jupyter/``); ``url`` includes it.
    hub_address : str
        Lines that set the Hub's address, ``{port}`` and ``{base_url}`` filled in (default:
        ``bind_url``); the proxy must end up on 127.0.0.1:``port`` under ``base_url``.
    address_after_call : bool
        Place ``hub_address`` after ``configure_jupyterhub`` instead of before it.
    configure_args : str
        More keyword arguments of the call, on one line, ``{port}`` filled in.
    service_host : str
        The host of the gateway service's URL (the address it binds): loopback, or the
        test host 10.213.0.1 where Kubernetes pods must reach its API.
    """

    def __init__(
        self,
        directory: Path,
        hub_config: str = "",
        gateway_config: str = "",
        fast_service_restart: bool = False,
        base_url: str = "/",
        hub_address: str = 'c.JupyterHub.bind_url = "http://127.0.0.1:{port}{base_url}"',
        address_after_call: bool = False,
        configure_args: str = "",
        service_host: str = "127.0.0.1",
    ):
        if not shutil.which("configurable-http-proxy"):
            pytest.skip("configurable-http-proxy is not installed (npm)")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.proxy_port = free_port()
        self.state_dir = self.directory / "gateway-state"
        self.admin_token = secrets.token_hex(32)
        self.password = HUB_PASSWORD
        self.log_path = self.directory / "jupyterhub.log"
        self.config_path = self.directory / "jupyterhub_config.py"
        run = self.directory
        address = textwrap.dedent(hub_address).replace("{port}", str(self.port))
        address = address.replace("{base_url}", self.base_url) + "\n"
        configure_args = configure_args.strip().replace("{port}", str(self.port))
        configure_args = " " + configure_args if configure_args else ""
        self.config_path.write_text(
            textwrap.dedent(
                f"""
                import jupyterhub_dask_gateway

                c.JupyterHub.hub_ip = "127.0.0.1"
                c.JupyterHub.hub_port = {free_port()}
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.ConfigurableHTTPProxy.pid_file = "{run}/proxy.pid"
                c.JupyterHub.pid_file = "{run}/hub.pid"
                c.JupyterHub.db_url = "sqlite:///{run}/jupyterhub.sqlite"
                c.JupyterHub.cookie_secret_file = "{run}/cookie_secret"
                c.JupyterHub.authenticator_class = "dummy"
                c.DummyAuthenticator.password = {HUB_PASSWORD!r}
                c.Authenticator.allow_all = True
                c.JupyterHub.spawner_class = "localprocess"  # each server as its user
                c.Spawner.cmd = ["{VENV_BIN}/jupyterhub-singleuser"]
                c.JupyterHub.services = [
                    {{"name": "test-admin", "api_token": {self.admin_token!r}}},
                ]
                c.JupyterHub.load_roles = [
                    {{
                        "name": "test-admin",
                        "services": ["test-admin"],
                        "scopes": ["admin:users", "tokens", "admin:servers", "read:services"],
                    }},
                ]
                """
            )
            + ("" if address_after_call else address)
            + textwrap.dedent(hub_config)
            + textwrap.dedent(
                f"""
                jupyterhub_dask_gateway.configure_jupyterhub(
                    c,
                    url="http://{service_host}:{free_port()}",
                    proxy_address="127.0.0.1:{self.proxy_port}",
                    state_dir="{self.state_dir}",
                    cluster_heartbeat_period=2,{configure_args}
                )
                c.ClusterConfig.worker_memory = "512 M"
                c.ClusterConfig.scheduler_memory = "512 M"
                c.LocalBackend.warm_pool_size = 1
                c.LocalBackend.sigint_timeout = 3
                """
            )
            + (address if address_after_call else "")
            + textwrap.dedent(gateway_config)
            + (FAST_SERVICE_RESTART if fast_service_restart else "")
        )
        self.proc: subprocess.Popen | None = None

    # --- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The Hub's public URL (the proxy), base URL included, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}{self.base_url}".rstrip("/")

    @property
    def ws_url(self) -> str:
        """``url`` for websockets."""
        return "ws" + self.url[len("http") :]

    @property
    def gateway_url(self) -> str:
        """The gateway service through the Hub's proxy."""
        return f"{self.url}/services/{SERVICE}"

    @property
    def gateway_proxy_address(self) -> str:
        """The gateway's TCP proxy, for scheduler connections."""
        return f"gateway://127.0.0.1:{self.proxy_port}"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout=90):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DASK_GATEWAY__", "JUPYTERHUB_"))
        }
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        # /hub/api/ answers through the proxy only after every managed service is up
        wait_for(lambda: self._answers("/hub/api/"), timeout, what="the Hub")
        wait_for(
            lambda: self._answers(f"/services/{SERVICE}/api/version"), timeout, what="the gateway"
        )
        return self

    def _answers(self, path) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyterhub exited: {self.log()[-3000:]}")
        try:
            return requests.get(self.url + path, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        """The Hub's output, the gateway service's included."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        """Stop the Hub (it stops its service, servers and CHP), then kill what is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Clusters (and the gateway's proxy) outlive the service by design; user servers
        # and kernels too if the Hub was killed.
        kill_all(processes_under(str(self.directory)) + processes_of(TEST_ACCOUNTS))

    # --- the Hub's REST API, as the test-admin service ---------------------------------------
    def api(self, method, path, token=None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(
            method, f"{self.url}/hub/api/{path.lstrip('/')}", headers=headers, timeout=30, **kwargs
        )

    def start_server(self, user: str) -> None:
        """Spawn ``user``'s default server and wait until the Hub says it is ready."""
        r = self.api("POST", f"users/{user}/server")
        assert r.status_code in (201, 202), r.text
        wait_for(
            lambda: self.api("GET", f"users/{user}").json()["servers"].get("", {}).get("ready"),
            90,
            interval=0.25,
            what=f"{user}'s server",
        )

    def stop_server(self, user: str) -> None:
        """Stop ``user``'s server and wait until the Hub has no server of theirs."""
        self.api("DELETE", f"users/{user}/server")
        wait_for(
            lambda: not self.api("GET", f"users/{user}").json()["servers"],
            60,
            interval=0.25,
            what=f"{user}'s server to stop",
        )

    def ensure_user(self, name: str):
        r = self.api("POST", f"users/{name}")
        assert r.status_code in (201, 409), r.text

    def new_token(self, user: str, scopes: list[str] | None = None) -> dict:
        """A new API token of ``user`` (``scopes`` None: everything the user holds)."""
        self.ensure_user(user)
        body = {"note": "test", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.api("POST", f"users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def service_pid(self) -> int:
        r = self.api("GET", f"services/{SERVICE}")
        r.raise_for_status()
        return r.json()["pid"]

    # --- clients ----------------------------------------------------------------------------
    def gateway(self, token: str, **kwargs):
        """The unmodified dask-gateway client, authenticated with a Hub token."""
        from dask_gateway import Gateway, JupyterHubAuth

        return Gateway(
            self.gateway_url,
            proxy_address=self.gateway_proxy_address,
            auth=JupyterHubAuth(token),
            **kwargs,
        )

    def login(self, user: str, next_path: str | None = None) -> requests.Response:
        """Log ``user`` in with the Hub's login form; return the last response.

        ``response.session`` (set here) keeps the cookies, like a browser. With
        ``next_path`` the login starts there (a page behind OAuth) and follows every
        redirect back to it.
        """
        session = requests.Session()
        if next_path:
            page = session.get(self.url + next_path, timeout=30)
            assert page.url.startswith(f"{self.url}/hub/login?"), page.url
        else:
            page = session.get(f"{self.url}/hub/login", timeout=30)
        page.raise_for_status()
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        response = session.post(
            page.url,
            data={"username": user, "password": HUB_PASSWORD, "_xsrf": xsrf},
            timeout=60,
        )
        response.session = session
        return response


@pytest.fixture(scope="module")
def make_hub(tmp_path_factory):
    """Factory: ``make_hub(hub_config="...", gateway_config="...")`` starts a ``Hub``.

    Module-scoped, so a test module can share one Hub; every Hub started is stopped, and
    every process left under its directory killed, when the module is done.
    """
    started: list[Hub] = []

    def factory(**kwargs) -> Hub:
        hub = Hub(open_to_accounts(tmp_path_factory.mktemp("hub")), **kwargs)
        started.append(hub)
        return hub.start()

    yield factory
    for hub in started:
        hub.stop()


def pytest_configure(config):
    os.environ.setdefault("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "30s")


@pytest.fixture(autouse=True)
def _collect_garbage_on_main_thread():
    """Run the garbage collector only here, on the main thread, between tests.

    Two client-side bugs make automatic collection unsafe in a long test process:
    a dask-gateway ``Gateway`` collected on the client's own event-loop thread
    deadlocks in ``__del__`` (it waits for that same loop), and late finalisation
    of the client's reference cycles trips CPython 3.11.7's gh-106905 at exit.
    """
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
