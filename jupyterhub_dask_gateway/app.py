"""The gateway service: configuration, startup and shutdown, the CLI.

``DaskGateway`` is a traitlets ``Application``: every setting is a config trait
(``c.DaskGateway.*`` in a config file, which may be the Hub's own
``jupyterhub_config.py``). It wires the store, the backend, the authenticator
and the cluster manager together, serves the HTTP API with tornado, and runs the
public TCP proxy as a separate long-lived process that it adopts again after a
restart, so established scheduler connections survive the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from urllib.parse import urlparse

import psutil
from tornado.httpserver import HTTPServer
from tornado.web import Application as WebApplication
from traitlets import Bool, Enum, Float, Instance, Integer, List, Unicode, Union, default, validate
from traitlets.config import Application, catch_config_error
from traitlets.config.loader import PyFileConfigLoader

from ._version import __version__
from .addresses import join_hostport, split_hostport
from .auth import BasicAuthenticator, JupyterHubAuthenticator, load_authenticator_class
from .backends.base import Backend, ClusterConfig, MemoryLimit, load_backend_class
from .backends.local import LocalBackend
from .errors import StartupError
from .files import write_private
from .handlers import default_handlers
from .hub_watch import ServerWatch, access_roles
from .kerberos import GatewayKerberosAuthenticator
from .metrics import GatewayMetrics
from .proxy.handoff import HandoffReceiver
from .quotas import Quotas
from .reconcile import ClusterManager
from .store import Store, load_or_create_key_file
from .tls import KEY_TYPES

# Settings of ``DaskGateway`` that are the cluster manager's policy, passed to it as is.
MANAGER_SETTINGS = (
    "api_url",
    "tls_key_type",
    "cluster_start_timeout",
    "worker_start_timeout",
    "cluster_heartbeat_period",
    "cluster_heartbeat_timeout",
    "check_timeouts_period",
    "worker_start_failure_limit",
    "parallelism",
    "db_cleanup_period",
    "db_cluster_max_age",
    "sharing_option",
    "retry_limit",
    "retry_base_delay",
    "retry_max_delay",
)

# Configurable base classes the gateway shares with the Hub (and every other traitlets
# application): traitlets applies ``c.<Name>`` to every class of that name in a
# configurable's ancestry, so in a shared ``jupyterhub_config.py`` the Hub's
# ``c.Application.log_level`` would set the gateway's too. These sections are dropped.
SHARED_BASE_SECTIONS = (
    "Application",
    "Configurable",
    "LoggingConfigurable",
    "SingletonConfigurable",
)


def _split_hostport(value: str, what: str) -> tuple[str, int]:
    try:
        return split_hostport(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _read_or_create_secret(path: str) -> str:
    """A random secret kept in a 0600 file, so it survives restarts (proxy token, cookies)."""
    try:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_hex(32)
    # Durable: an adopted proxy keeps the token it started with across a crash of ours.
    write_private(path, value, replace=True, durable=True)
    return value


class DaskGateway(Application):
    """A Dask Gateway for JupyterHub users."""

    name = "jupyterhub-dask-gateway"
    version = __version__
    description = """Run Dask clusters for JupyterHub users.

    Speaks the dask-gateway protocol, so `from dask_gateway import Gateway` works
    unchanged. Under JupyterHub it runs as a managed service configured from
    jupyterhub_config.py (see jupyterhub_dask_gateway.configure_jupyterhub).
    """
    examples = """
    jupyterhub-dask-gateway --config jupyterhub_config.py
    jupyterhub-dask-gateway --generate-config > dask_gateway_config.py
    """

    aliases = {
        "config": "DaskGateway.config_file",
        "f": "DaskGateway.config_file",
        "log-level": "DaskGateway.log_level",
    }
    flags = {
        "generate-config": (
            {"DaskGateway": {"generate_config": True}},
            "Print a config file with every setting and its help, then exit.",
        ),
    }

    @property
    def classes(self):
        """The configurables ``--generate-config`` documents (every built-in plugin)."""
        from .backends.pbs import PBSBackend, PBSClusterConfig
        from .backends.slurm import SlurmBackend, SlurmClusterConfig

        return [
            DaskGateway,
            BasicAuthenticator,
            JupyterHubAuthenticator,
            GatewayKerberosAuthenticator,
            Backend,
            LocalBackend,
            ClusterConfig,
            SlurmBackend,
            SlurmClusterConfig,
            PBSBackend,
            PBSClusterConfig,
        ]

    config_file = Unicode("", help="Python config file to load (may be jupyterhub_config.py).").tag(
        config=True
    )
    generate_config = Bool(False, help="Print a full config file and exit.").tag(config=True)

    # --- addresses --------------------------------------------------------------------
    address = Unicode(
        help="host:port the HTTP API binds to (default 127.0.0.1:8001; under the Hub, "
        "taken from JUPYTERHUB_SERVICE_URL).",
    ).tag(config=True)

    @default("address")
    def _default_address(self):
        url = os.environ.get("JUPYTERHUB_SERVICE_URL")
        if url:
            u = urlparse(url)
            return f"{u.hostname}:{u.port or 80}"
        return "127.0.0.1:8001"

    proxy_address = Unicode(
        "127.0.0.1:8786",
        help="host:port of the public TCP proxy: TLS scheduler traffic routed by SNI, and "
        "anything else relayed to the HTTP API. Empty disables the proxy.",
    ).tag(config=True)

    base_url = Unicode(
        help="URL prefix of every route (default JUPYTERHUB_SERVICE_PREFIX, else '/').",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @validate("base_url")
    def _check_base_url(self, proposal):
        v = proposal["value"] or "/"
        return "/" + v.strip("/") + "/" if v.strip("/") else "/"

    dashboard_route_prefix = Unicode(
        "",
        help="Prefix added to dashboard_route in cluster models, relative to the client's "
        "public_address (normally empty: the client's address already holds the prefix).",
    ).tag(config=True)

    api_url = Unicode(
        help="URL schedulers use to reach this gateway's API (default http://<address><base_url>"
        "api/v1). Set it when schedulers run on other hosts (job queues).",
    ).tag(config=True)

    @default("api_url")
    def _default_api_url(self):
        host, port = _split_hostport(self.address, "address")
        return f"http://{join_hostport(host, port)}{self.base_url}api/v1"

    # --- plugins ----------------------------------------------------------------------
    authenticator_class = Unicode(
        help='Authenticator: "jupyterhub" (default under the Hub), "basic" (default '
        'elsewhere), "kerberos", or an import string.',
    ).tag(config=True)

    @default("authenticator_class")
    def _default_authenticator_class(self):
        return "jupyterhub" if os.environ.get("JUPYTERHUB_API_TOKEN") else "basic"

    backend_class = Unicode(
        "local", help='Backend: "local", "slurm", "pbs", "kubernetes", or an import string.'
    ).tag(config=True)

    # --- state ------------------------------------------------------------------------
    state_dir = Unicode(
        help="Directory (created 0700) for the database, the encryption key, cluster work "
        "dirs and the proxy's pid file (default ./dask-gateway-state, env JHDG_STATE_DIR).",
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self):
        return os.environ.get("JHDG_STATE_DIR") or os.path.abspath("dask-gateway-state")

    db_url = Unicode(
        help="SQLAlchemy URL of the database (default sqlite in state_dir).",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return "sqlite:///" + os.path.join(self.state_dir, "gateway.sqlite")

    db_encrypt_keys = List(
        Unicode(),
        help="Fernet keys (44-char url-safe base64) encrypting tokens and TLS keys at rest; the "
        "first encrypts, all decrypt (rotation). Env JHDG_ENCRYPT_KEYS, ';'-separated. If "
        "empty, a key is generated once into <state_dir>/encryption.key (0600).",
    ).tag(config=True)

    @default("db_encrypt_keys")
    def _default_keys(self):
        raw = os.environ.get("JHDG_ENCRYPT_KEYS", "")
        return [k.strip() for k in raw.split(";") if k.strip()]

    stop_clusters_on_shutdown = Bool(
        False,
        help="Stop every cluster when the gateway shuts down normally. By default clusters "
        "(and the proxy) keep running and are re-attached on the next start.",
    ).tag(config=True)

    db_cleanup_period = Float(600, help="Seconds between prunes of old stopped clusters.").tag(
        config=True
    )
    db_cluster_max_age = Float(
        86400, help="Seconds a stopped cluster's record is kept before it is pruned."
    ).tag(config=True)

    # --- cluster TLS ----------------------------------------------------------------------
    tls_key_type = Enum(
        list(KEY_TYPES),
        default_value="ecdsa-p256",
        help="Key of each new cluster's TLS certificate: 'ecdsa-p256' (default: stronger, "
        "~500x faster to generate, a third of the size in every list answer) or 'rsa-2048' "
        "(what dask-gateway-server issues). The dask-gateway client accepts both; existing "
        "clusters keep theirs.",
    ).tag(config=True)

    # --- timeouts ---------------------------------------------------------------------
    cluster_start_timeout = Float(
        60, help="Seconds a scheduler may take to send its first heartbeat before FAILED."
    ).tag(config=True)
    worker_start_timeout = Float(
        60, help="Seconds a worker may take to join its scheduler before it is replaced."
    ).tag(config=True)
    cluster_heartbeat_period = Float(
        10, help="Seconds between scheduler heartbeats to the gateway."
    ).tag(config=True)
    cluster_heartbeat_timeout = Float(
        help="Seconds without a heartbeat after which a cluster is FAILED (default 3x period)."
    ).tag(config=True)

    @default("cluster_heartbeat_timeout")
    def _default_hb_timeout(self):
        return 3 * self.cluster_heartbeat_period

    check_timeouts_period = Float(
        2, help="Seconds between checks of start/heartbeat timeouts and process liveness."
    ).tag(config=True)
    worker_start_failure_limit = Integer(
        3, help="Consecutive worker start failures after which the cluster is FAILED."
    ).tag(config=True)
    retry_limit = Integer(
        5,
        min=1,
        help="Attempts of a failing backend operation (a scheduler start, a stop) before the "
        "cluster is FAILED with its last error; errors the user caused fail at once.",
    ).tag(config=True)
    retry_base_delay = Float(
        0.5, min=0, help="Seconds before the first retry of a failing backend operation."
    ).tag(config=True)
    retry_max_delay = Float(
        30, min=0, help="The longest wait between retries (the delay doubles up to it)."
    ).tag(config=True)
    parallelism = Integer(
        10, min=1, help="Concurrent reconcile tasks (and backend operations per cluster)."
    ).tag(config=True)
    wait_timeout = Float(
        20, help="Seconds a GET ...?wait request is held while a cluster starts."
    ).tag(config=True)
    routes_poll_timeout = Float(
        25, help="Seconds the proxy's route long-poll is held when nothing changes."
    ).tag(config=True)
    max_body_size = Integer(1024 * 1024, help="Largest accepted request body, in bytes.").tag(
        config=True
    )

    # --- quotas and sharing -------------------------------------------------------------
    max_clusters_per_user = Integer(
        None, allow_none=True, min=0, help="Most active clusters one user may have at once."
    ).tag(config=True)
    user_max_cores = Float(
        None,
        allow_none=True,
        min=0,
        help="Most cores (schedulers + workers) one user may hold across all clusters.",
    ).tag(config=True)
    user_max_memory = Union(
        [MemoryLimit(allow_none=True)],
        default_value=None,
        allow_none=True,
        help='Most memory one user may hold across all clusters, bytes or e.g. "16 G".',
    ).tag(config=True)
    sharing_option = Bool(
        True,
        help="Add a 'shared_groups' cluster option (comma-separated Hub groups whose members "
        "may connect to the cluster and view its dashboard).",
    ).tag(config=True)

    # --- under a Hub ------------------------------------------------------------------
    stop_clusters_when_server_stops = Bool(
        True,
        help="Under a Hub: stop a user's clusters server_stop_grace_period seconds after "
        "their last single-user server stops (culled, stopped by the user or an admin), "
        "and at once when the user is deleted. False keeps them until their idle timeout.",
    ).tag(config=True)
    server_stop_grace_period = Float(
        300,
        min=0,
        help="Seconds a user may be without a running server before their clusters stop "
        "(a server restarting within it keeps them).",
    ).tag(config=True)
    hub_poll_period = Float(
        15, min=0.1, help="Seconds between the gateway's questions to the Hub about servers."
    ).tag(config=True)
    hub_access_check_period = Float(
        60,
        min=0.1,
        help="Seconds between checks that cluster owners still hold the access scope (only "
        "when c.JupyterHub.load_roles redefines the 'user' role; one request per owner).",
    ).tag(config=True)

    start_proxy = Bool(True, help="Start (or adopt) the TCP proxy process on proxy_address.").tag(
        config=True
    )

    socket_handoff = Bool(
        True,
        help="Let the proxy pass HTTP connections on the public port to this process's API "
        "server (SCM_RIGHTS over a unix socket) instead of copying their bytes; the API then "
        "also sees the clients' own addresses. Schedulers: LocalBackend.socket_handoff.",
    ).tag(config=True)

    # --- metrics -----------------------------------------------------------------------
    metrics_require_auth = Bool(
        True,
        help="Require credentials for GET <base_url>metrics (like JupyterHub's "
        "authenticate_prometheus): the metrics_token, a Hub token with the read:metrics "
        "scope, or an admin's. False serves them to anyone who reaches the API.",
    ).tag(config=True)
    metrics_token = Unicode(
        help="Bearer token Prometheus may read the metrics with "
        "(Authorization: Bearer <token>; env JHDG_METRICS_TOKEN). Empty: none.",
    ).tag(config=True)

    @default("metrics_token")
    def _default_metrics_token(self):
        return os.environ.get("JHDG_METRICS_TOKEN", "")

    # --- runtime objects ---------------------------------------------------------------
    metrics: GatewayMetrics | None = None
    backend = Instance(Backend, allow_none=True)
    manager = Instance(ClusterManager, allow_none=True)
    _api_handoff: HandoffReceiver | None = None
    server_watch: ServerWatch | None = None

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    _log_formatter_cls = logging.Formatter

    @default("log_format")
    def _default_log_format(self):
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"

    @default("log_datefmt")
    def _default_log_datefmt(self):
        return "%Y-%m-%d %H:%M:%S"

    @catch_config_error
    def initialize(self, argv=None):
        super().initialize(argv)
        if self.generate_config:
            print(self.generate_config_file())
            self.exit(0)
        if self.config_file:
            os.environ["JHDG_LOADING_CONFIG"] = "1"
            try:
                self.load_gateway_config(self.config_file)
            finally:
                os.environ.pop("JHDG_LOADING_CONFIG", None)
        _split_hostport(self.address, "DaskGateway.address")
        if self.proxy_address:
            _split_hostport(self.proxy_address, "DaskGateway.proxy_address")

    def load_gateway_config(self, path: str) -> None:
        """Load a Python config file (which may be the Hub's), minus the sections of the
        base classes the gateway shares with the Hub; the command line still wins."""
        loader = PyFileConfigLoader(
            os.path.basename(path), path=os.path.dirname(os.path.abspath(path)), log=self.log
        )
        config = loader.load_config()
        dropped = [name for name in SHARED_BASE_SECTIONS if config.pop(name, None)]
        if dropped:
            self.log.debug("Ignoring the Hub's settings of %s", ", ".join(dropped))
        config.merge(self.cli_config)
        self.update_config(config)

    def healthy(self) -> bool:
        return self.manager is not None and self.manager.healthy()

    # --- startup ------------------------------------------------------------------------
    def _prepare_state_dir(self):
        # Everything the gateway creates is its own alone (the database, keys, tokens,
        # logs); the local backend opens the way to users' work dirs explicitly.
        os.umask(0o077)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Files an older version (or sqlite, under a laxer umask) left readable.
        for entry in os.scandir(self.state_dir):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                os.chmod(entry.path, 0o600)

    def _encryption_keys(self) -> list[bytes]:
        if self.db_encrypt_keys:
            return [k.encode() for k in self.db_encrypt_keys]
        return load_or_create_key_file(os.path.join(self.state_dir, "encryption.key"))

    def _proxy_token(self) -> str:
        return _read_or_create_secret(os.path.join(self.state_dir, "proxy.token"))

    async def start_async(self):
        self._prepare_state_dir()
        self.store = Store(self.db_url, self._encryption_keys())
        backend_cls = load_backend_class(self.backend_class)
        self.backend = backend_cls(parent=self, log=self.log, gateway_state_dir=self.state_dir)
        auth_cls = load_authenticator_class(self.authenticator_class)
        self.authenticator = auth_cls(parent=self, log=self.log)
        await self.authenticator.setup()
        await self.backend.setup()
        self.proxy_token = self._proxy_token()
        self.manager = ClusterManager(
            log=self.log,
            backend=self.backend,
            store=self.store,
            quotas=Quotas(self.max_clusters_per_user, self.user_max_cores, self.user_max_memory),
            **{name: getattr(self, name) for name in MANAGER_SETTINGS},
        )
        # Before the manager starts, so the metrics hear of every event from then on.
        self.metrics = GatewayMetrics(
            self.manager, self.backend_class, proxy_report_max_age=2 * self.routes_poll_timeout + 10
        )
        self.manager.events.listeners.append(self.metrics.on_event)
        await self.manager.start()
        self._start_server_watch()
        settings = {
            "gateway": self,
            "cookie_secret": self._cookie_secret(),
            "cookie_path": self.base_url,
            # The Hub's XSRF rules apply where its OAuth cookie is accepted (auth.py).
            "xsrf_cookies": False,
            "websocket_ping_interval": 30,
        }
        handlers = [
            *self.authenticator.extra_handlers(self.base_url),
            *default_handlers(self.base_url),
        ]
        self.web_app = WebApplication(handlers, **settings)
        host, port = _split_hostport(self.address, "address")
        self.http_server = HTTPServer(
            self.web_app,
            xheaders=False,
            max_body_size=self.max_body_size,
            idle_connection_timeout=120,
        )
        self.http_server.listen(port, address=host)
        if self.socket_handoff:
            self._start_api_handoff()
        self.log.info(
            "Dask Gateway %s API at http://%s:%d%s (backend %s, auth %s)",
            __version__,
            host,
            port,
            self.base_url,
            self.backend_class,
            self.authenticator_class,
        )
        if self.start_proxy and self.proxy_address:
            await self._ensure_proxy()

    def _start_server_watch(self):
        self.server_watch = None
        if not self.stop_clusters_when_server_stops or not isinstance(
            self.authenticator, JupyterHubAuthenticator
        ):
            return  # standalone: there are no servers to follow
        hub_auth = self.authenticator.hub_auth
        self.server_watch = ServerWatch(
            self.manager,
            hub_auth.api_url,
            hub_auth.api_token,
            grace=self.server_stop_grace_period,
            period=self.hub_poll_period,
            log=self.log,
            access_roles=access_roles(
                self.config.get("JupyterHub", {}), self.authenticator.service_name
            ),
            access_check_period=self.hub_access_check_period,
        )
        self.server_watch.start()

    def _start_api_handoff(self):
        # Tornado's TCPServer takes a socket as its own accept would only through this
        # private method; without it the proxy keeps splicing (as before).
        adopt = getattr(self.http_server, "_handle_connection", None)
        if adopt is None:
            return
        receiver = HandoffReceiver(f"@jhdg-api-{secrets.token_hex(16)}", adopt)
        try:
            receiver.start()
        except OSError as e:
            self.log.warning("API connection hand-off unavailable: %s", e)
            return
        self._api_handoff = receiver
        self.manager.routes.http_handoff = receiver.path

    def _cookie_secret(self) -> bytes:
        return _read_or_create_secret(os.path.join(self.state_dir, "cookie.secret")).encode()

    # --- the proxy process ----------------------------------------------------------------
    def _proxy_pid_file(self) -> str:
        return os.path.join(self.state_dir, "proxy.pid")

    def _find_running_proxy(self) -> psutil.Process | None:
        try:
            with open(self._proxy_pid_file()) as f:
                pid = int(f.read().strip())
            proc = psutil.Process(pid)
            cmd = proc.cmdline()
        except (FileNotFoundError, ValueError, psutil.Error):
            return None
        if "jupyterhub_dask_gateway.proxy" in cmd and self.proxy_address in cmd:
            return proc
        return None

    async def _ensure_proxy(self):
        existing = self._find_running_proxy()
        if existing is not None:
            self.log.info(
                "Adopted the running proxy (pid %d) on %s", existing.pid, self.proxy_address
            )
            self.proxy_pid = existing.pid
            return
        host, port = _split_hostport(self.address, "address")
        log_path = os.path.join(self.state_dir, "proxy.log")
        fd = os.open(
            log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        env = {**os.environ, "JHDG_PROXY_TOKEN": self.proxy_token}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "jupyterhub_dask_gateway.proxy",
                "--listen",
                self.proxy_address,
                "--gateway-url",
                f"http://{join_hostport(host, port)}{self.base_url}",
                "--http-target",
                join_hostport(host, port),
                "--pid-file",
                self._proxy_pid_file(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                env=env,
            )
        finally:
            os.close(fd)
        self.proxy_pid = proc.pid
        self._proxy_proc = proc
        # Wait (bounded) until it accepts connections, so clients never race its startup.
        phost, pport = _split_hostport(self.proxy_address, "proxy_address")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"The proxy exited at startup; see {log_path}")
            try:
                _, w = await asyncio.open_connection(phost, pport)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        self.log.info("Started the proxy (pid %d) on %s", proc.pid, self.proxy_address)

    def _stop_proxy(self):
        proc = self._find_running_proxy()
        if proc is not None:
            try:
                proc.terminate()
                proc.wait(5)
            except psutil.Error:
                pass

    # --- run / stop -----------------------------------------------------------------------
    async def stop_async(self):
        self.log.info("Shutting down")
        self.http_server.stop()
        if self._api_handoff is not None:
            self._api_handoff.stop()
        if self.server_watch is not None:
            await self.server_watch.stop()
        await self.manager.shutdown(self.stop_clusters_on_shutdown)
        await self.backend.cleanup()
        await self.authenticator.cleanup()
        if self.stop_clusters_on_shutdown or not any(
            not c.status.done for c in self.manager.clusters.values()
        ):
            self._stop_proxy()
        self.store.close()

    def start(self):
        asyncio.run(self._run())

    async def _run(self):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start_async()
        await stop.wait()
        await self.stop_async()


def main(argv=None):
    app = DaskGateway.instance()
    app.initialize(argv)
    try:
        app.start()
    except StartupError as exc:
        app.log.critical("Not starting: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
