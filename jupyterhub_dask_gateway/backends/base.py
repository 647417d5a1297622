"""The backend contract and the per-cluster configuration.

A backend starts and stops schedulers and workers; nothing else. It never
decides *when*: the cluster manager (``reconcile.py``) calls it. Every start
returns JSON-serialisable state (pids, job ids, directories) that the store
keeps, so a restarted gateway can stop or re-attach to whatever was started.
Readiness is not the backend's business either: a scheduler announces itself
with its first heartbeat, a worker by appearing in a heartbeat.

Every hook the manager calls is declared on ``Backend`` below, with its default.
Subclasses must implement the four coroutines of the core (checked when the class
is defined, so an incomplete backend fails at import, not at its first cluster):

``start_cluster(cluster, env) -> dict``
    Start the scheduler. ``env`` holds the variables the scheduler preload needs.
    Return as soon as it is launched (state), not when it is ready. If it raises,
    nothing it started may be left running: the manager retries it with backoff
    (a ``GatewayError`` below 500, such as ``InvalidOptions``, fails the cluster at
    once) and fails the cluster with the last error after ``retry_limit`` attempts.
``stop_cluster(cluster) -> None``
    Stop the scheduler and anything else started for the cluster. Idempotent,
    works from ``cluster.state`` alone.
``start_worker(cluster, worker, env) -> dict``
    Start one worker named ``worker.name`` connecting to ``cluster.scheduler_address``.
    Raise ``TryLater`` when it cannot start now through nobody's fault (a full quota):
    the worker is not counted as a failure and the cluster tries again later.
``stop_worker(cluster, worker) -> None``
    Idempotent, from ``worker.state`` alone.

The rest have defaults: ``setup()``/``cleanup()`` for the backend's lifetime and
``reattach(clusters)`` after a restart;
``check_owner(username)`` to refuse users it cannot run clusters for;
``check_clusters``/``check_workers`` for liveness; ``log_tail`` for what the
processes printed; ``confirm_address`` for where its schedulers really listen
(the address checks of the first heartbeat); ``handoff_target`` for schedulers
that take client sockets from the proxy; ``get_cluster_options`` and
``make_cluster_config`` for the options users may set. docs/design.md ("Adding a
backend") walks through writing one.
"""

from __future__ import annotations

import inspect
import os
import sys

from traitlets import (
    Any,
    Callable,
    Dict,
    Float,
    Integer,
    List,
    Type,
    Unicode,
    Union,
    default,
    validate,
)
from traitlets.config import LoggingConfigurable

from ..addresses import (
    REPORTED,
    in_networks,
    join_hostport,
    never_routable,
    parse_networks,
    resolve,
    split_address,
)
from ..errors import InvalidOptions
from ..options import Options
from ..plugins import load_plugin_class
from ..utils import parse_memory, require_coroutines


class MemoryLimit(Integer):
    """An integer number of bytes that also accepts strings such as ``"2 G"``."""

    info_text = 'a number of bytes or a string such as "2 G"'

    def validate(self, obj, value):
        if isinstance(value, str) or (isinstance(value, float) and not isinstance(value, bool)):
            try:
                value = parse_memory(value)
            except ValueError as exc:
                raise self.error(obj, value) from exc
        return super().validate(obj, value)


class ClusterConfig(LoggingConfigurable):
    """Per-cluster settings; the options handler may override any of them per cluster."""

    python = Unicode(
        help="Python executable that runs schedulers and workers (default: the gateway's own).",
    ).tag(config=True)

    @default("python")
    def _default_python(self):
        return sys.executable

    environment = Dict(
        help="Extra environment variables for the scheduler and the workers.",
    ).tag(config=True)
    worker_cores = Integer(1, min=1, help="Cores per worker (also its default thread count).").tag(
        config=True
    )
    worker_memory = MemoryLimit(
        parse_memory("2 G"), help='Memory per worker in bytes, or a string such as "2 G".'
    ).tag(config=True)
    worker_threads = Integer(0, min=0, help="Threads per worker; 0 means one per worker core.").tag(
        config=True
    )
    scheduler_cores = Integer(1, min=1, help="Cores reserved for the scheduler.").tag(config=True)
    scheduler_memory = MemoryLimit(
        parse_memory("2 G"), help='Memory reserved for the scheduler, bytes or e.g. "2 G".'
    ).tag(config=True)
    idle_timeout = Float(
        0,
        min=0,
        help="Seconds a cluster may sit idle (no tasks) before it is stopped; 0 disables.",
    ).tag(config=True)
    adaptive_period = Float(
        3, min=0.05, help="Seconds between adaptive-scaling decisions in the scheduler."
    ).tag(config=True)
    cluster_max_workers = Integer(
        100,
        allow_none=True,
        min=0,
        help="Most workers one cluster may have (default 100; None = only the cores and "
        "memory limits, and the gateway's hard cap of 10000 per request).",
    ).tag(config=True)
    cluster_max_cores = Float(
        None, allow_none=True, min=0, help="Most cores (scheduler + workers) per cluster."
    ).tag(config=True)
    cluster_max_memory = MemoryLimit(
        None, allow_none=True, help="Most memory (scheduler + workers) per cluster, in bytes."
    ).tag(config=True)

    @validate("worker_threads")
    def _check_threads(self, proposal):
        return proposal["value"]

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.trait_names(config=True)}
        if not out["worker_threads"]:
            out["worker_threads"] = out["worker_cores"]
        out["max_workers"] = self.max_workers()
        return out

    def max_workers(self) -> int | None:
        """The effective worker limit: the explicit one or what cores and memory allow."""
        limits = []
        if self.cluster_max_workers is not None:
            limits.append(self.cluster_max_workers)
        if self.cluster_max_cores is not None:
            limits.append(int((self.cluster_max_cores - self.scheduler_cores) // self.worker_cores))
        if self.cluster_max_memory is not None:
            limits.append(
                int((self.cluster_max_memory - self.scheduler_memory) // self.worker_memory)
            )
        return max(0, min(limits)) if limits else None

    def check_limits(self) -> None:
        if self.cluster_max_cores is not None and self.scheduler_cores > self.cluster_max_cores:
            raise InvalidOptions(
                f"Scheduler cores {self.scheduler_cores} exceed the cluster limit of "
                f"{self.cluster_max_cores} cores"
            )
        if self.cluster_max_memory is not None and self.scheduler_memory > self.cluster_max_memory:
            raise InvalidOptions(
                f"Scheduler memory {self.scheduler_memory} bytes exceeds the cluster limit of "
                f"{self.cluster_max_memory} bytes"
            )


_CONTRACT = ("start_cluster", "stop_cluster", "start_worker", "stop_worker")


class Backend(LoggingConfigurable):
    """Base class of all backends. See the module docstring for the contract."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        require_coroutines(cls, Backend, _CONTRACT)

    #: A base for other backends, exempt from the definition-time check (not inherited).
    _abstract = True

    #: Seconds the manager keeps asking ``check_workers`` why a worker the scheduler lost
    #: ended, for backends that learn of it a moment after the scheduler (0: ask once).
    departure_check_seconds = 0.0

    cluster_options = Union(
        [Any()],
        help="""Options users may set when creating a cluster: an ``Options`` instance, or a
        callable ``(user) -> Options`` (may be async) to vary them by user.""",
    ).tag(config=True)

    @default("cluster_options")
    def _default_cluster_options(self):
        return Options()

    cluster_config_class = Type(
        ClusterConfig, klass=ClusterConfig, help="The ClusterConfig subclass this backend uses."
    ).tag(config=True)

    gateway_state_dir = Unicode(
        help="""The gateway's private state directory (``DaskGateway.state_dir``), where a
        backend keeps what it needs across restarts. Set by the gateway when it creates
        the backend; the current directory otherwise (a backend made on its own)."""
    )

    @default("gateway_state_dir")
    def _default_gateway_state_dir(self):
        return os.getcwd()

    async def get_cluster_options(self, user) -> Options:
        opts = self.cluster_options
        if callable(opts) and not isinstance(opts, Options):
            opts = opts(user)
            if inspect.isawaitable(opts):
                opts = await opts
        if not isinstance(opts, Options):
            raise TypeError("cluster_options must be an Options instance or return one")
        return opts

    def make_cluster_config(self, overrides: dict) -> ClusterConfig:
        """Build the ClusterConfig from the admin's config plus per-cluster overrides."""
        cfg = self.cluster_config_class(parent=self)
        allowed = set(cfg.trait_names(config=True))
        for key, value in overrides.items():
            if key not in allowed:
                raise InvalidOptions(f"Unknown cluster config field {key!r} from options handler")
            try:
                setattr(cfg, key, value)
            except Exception as exc:
                raise InvalidOptions(f"Invalid value for {key}: {exc}") from None
        cfg.check_limits()
        return cfg

    # --- helpers every backend uses to build its command lines -------------------------

    listen_host = Unicode(
        "127.0.0.1",
        help="Host schedulers and workers bind to; 127.0.0.1 for the local backend, "
        "an address the workers can reach for job-queue backends.",
    ).tag(config=True)

    def scheduler_command(self, cluster, port: int = 0, dashboard_port: int = 0) -> list[str]:
        """``python -m distributed.cli.dask_scheduler`` with TLS and our preload
        (listening on free ports unless told which)."""
        host = self.listen_host
        return [
            cluster.config.get("python") or sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--protocol",
            "tls",
            "--host",
            host,
            "--port",
            str(port),
            "--dashboard-address",
            join_hostport(host, dashboard_port),
            "--preload",
            "jupyterhub_dask_gateway.scheduler_preload",
        ]

    def worker_command(self, cluster, worker) -> list[str]:
        """One worker process (no nanny: the gateway itself replaces dead workers).

        Without a dashboard: nothing proxies a worker's, and its port would be open
        to every local account (``tls_env`` also empties its HTTP routes).
        """
        cfg = cluster.config
        return [
            cfg.get("python") or sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            cluster.scheduler_address,
            "--name",
            worker.name,
            "--nthreads",
            str(cfg.get("worker_threads") or cfg.get("worker_cores", 1)),
            "--memory-limit",
            str(cfg.get("worker_memory", 0)),
            "--no-nanny",
            "--host",
            self.listen_host,
            "--no-dashboard",
            "--dashboard-address",
            join_hostport(self.listen_host, 0),
        ]

    @staticmethod
    def tls_env(role: str, cert_path: str, key_path: str) -> dict:
        """Environment pointing distributed at the cluster's key pair (scheduler or worker)."""
        prefix = "DASK_DISTRIBUTED__COMM__TLS__"
        extra = {"DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]"} if role == "worker" else {}
        return {
            **extra,
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            prefix + "CA_FILE": cert_path,
            f"{prefix}{role.upper()}__CERT": cert_path,
            f"{prefix}{role.upper()}__KEY": key_path,
        }

    def handoff_target(self, cluster) -> dict:
        """Where the proxy may pass this cluster's client connections to its scheduler.

        ``{"path": unix socket, "uid": listener's uid, "pid": listener's pid}``
        for schedulers on the proxy's host; ``{}`` (the default) makes the proxy
        splice bytes instead. The gateway uses it only once the scheduler's
        heartbeat says the socket is listening, and the proxy checks the
        listener's credentials against uid and pid before handing anything over.
        """
        return {}

    # --- where schedulers are -------------------------------------------------------------

    allowed_networks = List(
        Unicode(),
        help="""Networks (CIDR, e.g. "10.0.0.0/8") in which schedulers may report addresses
        even where the backend cannot confirm they are its processes'. Empty (the default):
        only addresses the backend confirms. Link-local and metadata addresses are refused
        always.""",
    ).tag(config=True)

    @validate("allowed_networks")
    def _check_networks(self, proposal):
        parse_networks(proposal["value"])  # ValueError → a config error at startup
        return proposal["value"]

    async def check_addresses(self, cluster, reported: dict) -> str:
        """ "" if every address the scheduler reported is where this backend put it, else why.

        ``reported`` maps ``scheduler_address``, ``dashboard_address``, ``api_address`` to
        what the first heartbeat said (a scheduler runs its owner's code: these are
        claims). Backends confirm an address with ``confirm_address``.
        """
        allowed = parse_networks(self.allowed_networks)
        for field in REPORTED:
            value = reported.get(field) or ""
            if not value:
                if field == "scheduler_address":
                    return "no scheduler address"
                continue
            try:
                host, port = split_address(value)
            except ValueError as exc:
                return f"{field}: {exc}"
            ips = await resolve(host)
            if not ips:
                return f"{field} {value}: the host does not resolve"
            for ip in ips:
                why = never_routable(ip)
                if why:
                    return f"{field} {value}: {ip} is {why}"
            if in_networks(ips, allowed):
                continue
            why = await self.confirm_address(cluster, ips, port)
            if why:
                return f"{field} {value}: {why}"
        return ""

    async def confirm_address(self, cluster, ips: set, port: int) -> str:
        """ "" if ``ips``:``port`` is where this backend runs ``cluster``'s scheduler, else why.

        The base confirms nothing (only ``allowed_networks`` admit addresses).
        """
        return "not an address this backend started the scheduler at"

    # --- accounts -----------------------------------------------------------------------

    user_accounts = Union(
        [Dict(value_trait=Unicode()), Callable()],
        default_value={},
        help="""Gateway user name -> system account its clusters run as, where a backend
        runs them as the user: a dict (names not in it map to themselves) or a callable
        ``(username) -> account name``. By default every user's account has their name.""",
    ).tag(config=True)

    def account_name(self, username: str) -> str:
        """The system account for ``username`` (see ``user_accounts``)."""
        mapping = self.user_accounts
        if callable(mapping):
            name = mapping(username)
        else:
            name = mapping.get(username, username)
        if not isinstance(name, str) or not name:
            raise TypeError(f"user_accounts gave {name!r} for {username!r}, not an account name")
        return name

    async def check_owner(self, username: str) -> None:
        """Raise a ``GatewayError`` if this backend cannot run clusters for ``username``.

        Called when a cluster is requested, before anything is created, so the
        user gets the reason from ``new_cluster()`` (e.g. no local account).
        """

    async def setup(self) -> None:
        """Called once when the gateway starts; raise ``StartupError`` to refuse to start."""

    async def cleanup(self) -> None:
        """Called once when the gateway stops (clusters keep running)."""

    async def reattach(self, clusters) -> None:
        """Called once when the gateway starts, after ``setup``, with every cluster the
        store holds (finished ones too): the backend picks up those not finished and
        removes what it started for any other (left over by a crash between a start
        and its record, or by a stop that did not finish). The default does nothing.
        It must not raise for one cluster's sake: log, and carry on."""

    async def check_clusters(self, clusters) -> list[tuple[bool, str]]:
        """One ``(alive, reason)`` per cluster whose scheduler was started (periodic).

        ``alive=False`` fails the cluster with ``reason`` (the default sees nothing die:
        only the heartbeat timeout notices a lost scheduler).
        """
        return [(True, "")] * len(clusters)

    async def check_workers(self, cluster, workers) -> list[tuple[bool, str]]:
        """One ``(alive, reason)`` per started worker of a running cluster (periodic);
        a dead worker is replaced while the cluster wants it."""
        return [(True, "")] * len(workers)

    async def log_tail(self, cluster, worker=None, lines: int = 50) -> str:
        """The last ``lines`` lines a cluster's scheduler (``worker=None``) or one worker
        printed, as text; "" when there is nothing to show.

        The processes run their owner's code: a backend reads what they wrote as
        something hostile (no links followed, bounded size). The manager quotes the
        last lines in the reason of a cluster that did not start; a backend may
        return why the scheduler is not running yet instead (a job still queued).
        """
        return ""

    async def start_cluster(self, cluster, env: dict) -> dict:
        raise NotImplementedError

    async def stop_cluster(self, cluster) -> None:
        raise NotImplementedError

    async def start_worker(self, cluster, worker, env: dict) -> dict:
        raise NotImplementedError

    async def stop_worker(self, cluster, worker) -> None:
        raise NotImplementedError


def tail_summary(text: str, lines: int = 5) -> str:
    """A log tail on one line, for a reason: the last non-empty ``lines``, " | "-joined."""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:]) if lines > 0 else ""


# The dask-gateway-server backends admins migrate from, and ours that do the same job.
DASK_GATEWAY_NAMES = {
    "dask_gateway_server.backends.local.LocalBackend": "local",
    "dask_gateway_server.backends.local.UnsafeLocalBackend": "local",
    "dask_gateway_server.backends.jobqueue.slurm.SlurmBackend": "slurm",
    "dask_gateway_server.backends.jobqueue.pbs.PBSBackend": "pbs",
    "dask_gateway_server.backends.kubernetes.KubeBackend": "kubernetes",
    "dask_gateway_server.backends.kubernetes.backend.KubeBackend": "kubernetes",
}


def load_backend_class(name: str) -> type[Backend]:
    """An entry-point name (``local``, ``slurm``, ``pbs``, ``kubernetes``), a
    dask-gateway-server class path, or an import string."""
    return load_plugin_class(
        name,
        group="jupyterhub_dask_gateway.backends",
        builtin={
            "local": "jupyterhub_dask_gateway.backends.local.LocalBackend",
            "slurm": "jupyterhub_dask_gateway.backends.slurm.SlurmBackend",
            "pbs": "jupyterhub_dask_gateway.backends.pbs.PBSBackend",
            "kubernetes": "jupyterhub_dask_gateway.backends.kubernetes.KubeBackend",
        },
        aliases=DASK_GATEWAY_NAMES,
        base=Backend,
    )
