"""The cluster manager: the only code that changes clusters and talks to the backend.

Handlers call the small public API here (``create``, ``stop``, ``scale``,
``adapt``, ``share``, ``heartbeat``); those set *targets* and queue the cluster
in a work queue (``workqueue``). A bounded pool of reconciler tasks moves each
cluster's and worker's *status* toward its target (start the scheduler, start or
stop workers, stop everything), one pass per cluster at a time; a pass that fails
is retried with capped exponential backoff, and fails the cluster with the last
error after ``retry_limit`` attempts. A periodic check turns stuck or dead things
into FAILED records with a reason the user can read, and replaces dead workers up
to the target count. Every change is saved through ``_save``: to the store and to
the listing cache; the proxy's route table follows the RUNNING clusters.

The manager owns a cluster's worker count: ``scale`` sets it; a heartbeat may
move it only while the cluster is adaptive (the scheduler decides then), within
the limits; the heartbeat's reply tells the scheduler the count and the ceiling,
so a clamped count is not asked for again.

It stands alone: everything it needs (policy settings, the backend, the store,
the quotas, a clock) is passed in, so tests drive it with a fake backend and a
fake clock (tests/test_manager.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Bool, Callable, Float, Instance, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .addresses import REPORTED
from .backends.base import Backend, tail_summary
from .errors import Conflict, Forbidden, GatewayError, InvalidOptions, NotFound, TryLater
from .events import Event, EventLog
from .listing import ListingCache
from .models import Cluster, ClusterStatus, JobStatus, User, Worker
from .options import Options, String
from .quotas import Quotas
from .routes import RouteTable
from .store import Store
from .tls import KEY_TYPES, new_keypair
from .workqueue import WorkQueue

# The most workers any request may ask for (scale, adapt, a heartbeat's count), whatever
# the limits say: a bound on the rows one request can create.
MAX_WORKERS = 10_000
# Worker records created per reconcile pass (the rest follow in the next passes).
WORKERS_PER_PASS = 100
# Why a worker the scheduler lost without being asked to close it failed.
LEFT_UNEXPECTEDLY = "Worker left the scheduler unexpectedly"
# The cluster option that shares a cluster with groups (``sharing_option``).
SHARING_FIELD = String("shared_groups", "", label="Share with groups (comma-separated)")


class ClusterManager(LoggingConfigurable):
    """Owns the in-memory clusters, and moves them with the backend and the store.

    The policy traits mirror the ``DaskGateway`` settings of the same names (the
    gateway passes its values in; see there for their meaning).
    """

    backend = Instance(Backend)
    store = Instance(Store)
    quotas = Instance(Quotas, args=())
    clock = Callable(help="Seconds since the epoch: time.time, or a test's fake clock.")

    @default("clock")
    def _default_clock(self):
        return time.time

    api_url = Unicode(help="Where schedulers reach the gateway's API (scheduler env).")
    tls_key_type = Unicode("ecdsa-p256")
    cluster_start_timeout = Float(60)
    worker_start_timeout = Float(60)
    cluster_heartbeat_period = Float(10)
    cluster_heartbeat_timeout = Float(30)
    check_timeouts_period = Float(2)
    worker_start_failure_limit = Integer(3, min=1)
    parallelism = Integer(10, min=1)
    db_cleanup_period = Float(600)
    db_cluster_max_age = Float(86400)
    sharing_option = Bool(True)
    retry_limit = Integer(
        5, min=1, help="Attempts of a failing reconcile pass before the cluster is FAILED."
    )
    retry_base_delay = Float(0.5, help="Seconds before the first retry; doubles each time.")
    retry_max_delay = Float(30, help="The longest wait between two retries.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.tls_key_type not in KEY_TYPES:
            raise ValueError(f"tls_key_type must be one of {sorted(KEY_TYPES)}")
        self.clusters: dict[str, Cluster] = {}
        self.routes = RouteTable()
        self.listings = ListingCache()
        self.events = EventLog()
        self._work = WorkQueue(self.retry_base_delay, self.retry_max_delay)
        self._ready: dict[str, asyncio.Event] = {}
        self._worker_failures: dict[str, int] = {}
        self._last_deferral: dict[str, str] = {}  # cluster -> why its last worker waits
        self._deferred: dict[str, float] = {}  # cluster -> seconds until it tries again
        self._tasks: list[asyncio.Task] = []
        self._events_since_trim = 0
        self._http = AsyncHTTPClient(force_instance=True)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _record(self, cluster: Cluster, kind: str, message: str, worker: str | None = None):
        """Add to the cluster's history (memory, store, listeners such as the metrics)."""
        event = Event(self._now_ms(), kind, message[:2000], worker)
        self.events.record(cluster.name, event)
        self.store.add_event(cluster.name, event)
        self._events_since_trim += 1
        if self._events_since_trim >= self.events.limit // 4:
            self._events_since_trim = 0
            for name in self._events_to_trim():
                self.store.trim_events(name, self.events.limit)

    def _events_to_trim(self) -> list[str]:
        return [
            c.name
            for c in self.clusters.values()
            if len(self.events.of(c.name)) >= self.events.limit
        ]

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self):
        self.clusters = self.store.load()
        for name, events in self.store.load_events().items():
            if name in self.clusters:
                self.events.load(name, events)
        self.listings.changed()
        await self.backend.reattach(list(self.clusters.values()))
        now = self.clock()
        for cluster in self.clusters.values():
            if cluster.status.done:
                continue
            if cluster.status == JobStatus.RUNNING:
                cluster.last_heartbeat = now
                if not cluster.target.done:
                    self.routes.put(cluster.name, cluster.scheduler_address)
                    self._event(cluster).set()
            self.queue(cluster)
        n_active = sum(1 for c in self.clusters.values() if not c.status.done)
        self.log.info(
            "Loaded %d clusters (%d active) from the database", len(self.clusters), n_active
        )
        loop = asyncio.get_running_loop()
        for i in range(self.parallelism):
            self._tasks.append(loop.create_task(self._reconcile_loop(), name=f"reconcile-{i}"))
        self._tasks.append(
            loop.create_task(self._periodic(self.check_timeouts_period, self.check_timeouts))
        )
        self._tasks.append(loop.create_task(self._periodic(self.db_cleanup_period, self.prune)))

    async def shutdown(self, stop_clusters: bool, timeout: float = 30):
        if stop_clusters:
            for cluster in self.clusters.values():
                if cluster.active:
                    self._set_target(cluster, JobStatus.STOPPED, "Gateway shut down")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(
                not c.status.done for c in self.clusters.values()
            ):
                await asyncio.sleep(0.1)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._work.close()
        self._http.close()

    def healthy(self) -> bool:
        """Whether every loop is still running (a crashed loop means a stuck gateway)."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    @property
    def queue_depth(self) -> int:
        """Clusters waiting for a reconcile pass."""
        return len(self._work)

    # --- queries ------------------------------------------------------------------------
    def get(self, name: str) -> Cluster:
        cluster = self.clusters.get(name)
        if cluster is None:
            raise NotFound(f"Cluster {name} not found")
        return cluster

    def user_clusters(self, username: str, active_only: bool = True) -> list[Cluster]:
        return [
            c
            for c in self.clusters.values()
            if c.username == username and (c.active or not active_only)
        ]

    def listing(self, user: User, statuses, prefix: str = "") -> bytes:
        """The client's listing (``GET api/v1/clusters/``), encoded, from the cache."""
        return self.listings.answer(self.clusters.values(), user, statuses, prefix)

    async def wait_ready(self, cluster: Cluster, timeout: float) -> None:
        if cluster.public_status == ClusterStatus.PENDING:
            try:
                await asyncio.wait_for(self._event(cluster).wait(), timeout)
            except TimeoutError:
                pass

    def _event(self, cluster: Cluster) -> asyncio.Event:
        ev = self._ready.get(cluster.name)
        if ev is None:
            ev = self._ready[cluster.name] = asyncio.Event()
        return ev

    # --- options and sharing ------------------------------------------------------------
    async def cluster_options(self, user: User) -> Options:
        """The options ``user`` may set: the backend's, plus ``shared_groups`` when
        ``sharing_option`` is on (and the admin's options do not define it already)."""
        options = await self.backend.get_cluster_options(user)
        if self.sharing_option and not any(f.field == SHARING_FIELD.field for f in options.fields):
            options = options.with_field(SHARING_FIELD)
        return options

    def share(self, cluster: Cluster, groups) -> None:
        """Replace the groups ``cluster`` is shared with (a list or comma-separated)."""
        cluster.shared_groups = parse_groups(groups)
        self._save(cluster)

    # --- handler API --------------------------------------------------------------------
    async def create(self, user: User, requested_options) -> Cluster:
        await self.backend.check_owner(user.name)
        options = await self.cluster_options(user)
        values = options.parse(requested_options)
        shared = []
        if self.sharing_option and SHARING_FIELD.field in values:
            shared = parse_groups(values[SHARING_FIELD.field])
        config = self.backend.make_cluster_config(options.overrides(values, user))
        cfg = config.to_dict()
        self.quotas.check_new_cluster(user, cfg, self.user_clusters(user.name))
        name = uuid.uuid4().hex
        cert, key = await asyncio.get_running_loop().run_in_executor(
            None, new_keypair, name, self.tls_key_type
        )
        # Again, with no await between the check and the insert: requests that passed the
        # first check concurrently are decided one by one here.
        self.quotas.check_new_cluster(user, cfg, self.user_clusters(user.name))
        cluster = Cluster(
            name=name,
            username=user.name,
            token=secrets.token_hex(32),
            tls_cert=cert,
            tls_key=key,
            options=values,
            config=cfg,
            start_time=self._now_ms(),
            shared_groups=shared,
        )
        self.clusters[name] = cluster
        self.store.add_cluster(cluster)
        self.listings.changed(cluster)
        self.log.info("Created cluster %s for user %s", name, user.name)
        self._record(
            cluster, "created", f"Created by {user.name} with options {json.dumps(values)}"
        )
        self.queue(cluster)
        return cluster

    def stop(self, cluster: Cluster, reason: str = "") -> None:
        if cluster.active:
            self.log.info("Stopping cluster %s%s", cluster.name, f" ({reason})" if reason else "")
            self._record(
                cluster, "stop_requested", f"Stop {reason}" if reason else "Stop requested"
            )
            self._set_target(cluster, JobStatus.STOPPED, reason)

    def worker_ceiling(self, cluster: Cluster) -> int | None:
        """The most workers ``cluster`` may have now: its limit and the owner's quota."""
        limit = cluster.config.get("max_workers")
        quota = self.quotas.max_workers_for(cluster, self.user_clusters(cluster.username))
        caps = [c for c in (limit, quota) if c is not None]
        return min(caps) if caps else None

    def clamp_workers(self, cluster: Cluster, n: int) -> tuple[int, str | None]:
        """Clamp a worker count to the cluster limit and the owner's quota, with a message."""
        limit = cluster.config.get("max_workers")
        quota = self.quotas.max_workers_for(cluster, self.user_clusters(cluster.username))
        msg = None
        if limit is not None and n > limit:
            msg = (
                f"Scale request of {n} workers would exceed resource limit of {limit} "
                f"workers. Scaling to {limit} instead."
            )
            n = limit
        if quota is not None and n > quota:
            msg = (
                f"Scale request of {n} workers would exceed your per-user quota "
                f"({self.quotas.describe()}). Scaling to {quota} instead."
            )
            n = quota
        return n, msg

    async def scale(self, cluster: Cluster, count, by: str = "") -> tuple[bool, str | None]:
        if not _is_count(count):
            raise InvalidOptions(f"Scale expects a non-negative integer, got {count!r}")
        if count > MAX_WORKERS:
            raise InvalidOptions(f"Scale to at most {MAX_WORKERS} workers, got {count}")
        self._require_running(cluster)
        count, msg = self.clamp_workers(cluster, count)
        previous = (cluster.count, cluster.adaptive)
        # Recorded before the scheduler hears of it: a heartbeat answered meanwhile
        # already carries the new count.
        cluster.adaptive = None
        self._set_count(cluster, count)
        try:
            await self._send_to_scheduler(cluster, {"op": "scale", "count": count})
        except Conflict:
            cluster.count, cluster.adaptive = previous
            raise
        self._save(cluster)
        self._record(cluster, "scaled", f"Scaled to {count} workers" + (f" by {by}" if by else ""))
        self.queue(cluster)
        return msg is None, msg

    async def adapt(self, cluster: Cluster, minimum, maximum, active=True, by: str = ""):
        for label, value in (("minimum", minimum), ("maximum", maximum)):
            if value is not None and not (_is_count(value) and value <= MAX_WORKERS):
                raise InvalidOptions(
                    f"Adapt expects {label} to be an integer from 0 to {MAX_WORKERS} or null, "
                    f"got {value!r}"
                )
        if not isinstance(active, bool):
            raise InvalidOptions(f"Adapt expects active to be a bool, got {active!r}")
        self._require_running(cluster)
        cap = self.worker_ceiling(cluster)
        lo = minimum or 0
        hi = maximum if maximum is not None else (cap if cap is not None else max(lo, 1) * 1000)
        msg = None
        if cap is not None and (hi > cap or lo > cap):
            new_hi, new_lo = min(hi, cap), min(lo, cap)
            msg = (
                f"Adapt with `maximum={hi}, minimum={lo}` workers would exceed resource "
                f"limit of {cap} workers. Using `maximum={new_hi}, minimum={new_lo}` instead."
            )
            hi, lo = new_hi, new_lo
        if lo > hi:
            raise InvalidOptions(f"Adapt minimum ({lo}) must not exceed maximum ({hi})")
        previous = cluster.adaptive
        # Recorded first, as in ``scale``: the heartbeat the change wakes is adaptive's.
        cluster.adaptive = {"minimum": lo, "maximum": hi} if active else None
        try:
            await self._send_to_scheduler(
                cluster, {"op": "adapt", "minimum": lo, "maximum": hi, "active": active}
            )
        except Conflict:
            cluster.adaptive = previous
            raise
        self._save(cluster)
        who = f" by {by}" if by else ""
        self._record(
            cluster,
            "adapted",
            f"Adaptive scaling from {lo} to {hi} workers{who}" if active else f"Adaptive off{who}",
        )
        return msg is None, msg

    def _require_running(self, cluster):
        if cluster.public_status != ClusterStatus.RUNNING:
            raise Conflict(f"cluster {cluster.name} is not running")

    async def _send_to_scheduler(self, cluster, msg: dict):
        delay = 0.1
        for attempt in range(3):
            try:
                await self._http.fetch(
                    HTTPRequest(
                        cluster.api_address + "/api/comm",
                        method="POST",
                        body=json.dumps(msg),
                        headers={
                            "Authorization": f"token {cluster.token}",
                            "Content-Type": "application/json",
                        },
                        request_timeout=10,
                    )
                )
                return
            except Exception as exc:
                if attempt == 2:
                    self.log.warning("Cluster %s: scheduler unreachable (%s)", cluster.name, exc)
                    raise Conflict(f"cluster {cluster.name} is not responding") from None
                await asyncio.sleep(delay)
                delay *= 2

    # --- the scheduler's side ------------------------------------------------------------
    def scheduler_env(self, cluster: Cluster) -> dict:
        """What the scheduler preload reads (docs/protocol.md, "The scheduler's side")."""
        cfg = cluster.config
        return {
            "DASK_GATEWAY_API_URL": self.api_url,
            "DASK_GATEWAY_API_TOKEN": cluster.token,
            "DASK_GATEWAY_CLUSTER_NAME": cluster.name,
            "JHDG_HEARTBEAT_PERIOD": str(self.cluster_heartbeat_period),
            "JHDG_ADAPTIVE_PERIOD": str(cfg.get("adaptive_period", 3)),
            "JHDG_IDLE_TIMEOUT": str(cfg.get("idle_timeout", 0)),
        }

    def worker_env(self, cluster: Cluster) -> dict:
        return {"DASK_GATEWAY_CLUSTER_NAME": cluster.name}

    async def heartbeat(self, cluster: Cluster, msg: dict) -> dict:
        """Apply a (type-checked) heartbeat; the reply for the scheduler.

        The first heartbeat's addresses must be where the backend started the scheduler
        (``Backend.check_addresses``); later ones may not change them. A refusal fails
        the cluster with the reason and raises ``Forbidden``. The reply is
        ``{"count": target workers, "max_workers": ceiling or None}``.
        """
        if cluster.target.done or cluster.status.done:
            return self._reply(cluster)
        reported = {f: str(msg.get(f) or "") for f in REPORTED}
        why = ""
        if cluster.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
            if not reported["scheduler_address"].startswith("tls://"):
                why = "Scheduler reported an address without TLS"
            elif why := await self.backend.check_addresses(cluster, reported):
                why = f"Refused the scheduler's addresses: {why}"
        elif cluster.status == JobStatus.RUNNING:
            known = {f: getattr(cluster, f) for f in REPORTED}
            # Fields a heartbeat leaves out are unchanged; any it states must be the same.
            changed = [f for f in REPORTED if f in msg and reported[f] != known[f]]
            if changed:
                why = f"The scheduler changed its {', '.join(changed)} after it started"
        if why:
            self._fail(cluster, why)
            raise Forbidden("The gateway refused this scheduler's addresses")
        self._apply_heartbeat(cluster, msg)
        return self._reply(cluster)

    def _reply(self, cluster: Cluster) -> dict:
        running = cluster.active and not cluster.status.done
        return {
            "count": cluster.count if running else 0,
            "max_workers": self.worker_ceiling(cluster) if running else 0,
        }

    def _apply_heartbeat(self, cluster: Cluster, msg: dict) -> None:
        cluster.last_heartbeat = self.clock()
        changed = False
        if cluster.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
            for f in REPORTED:
                setattr(cluster, f, str(msg.get(f) or ""))
            cluster.status = JobStatus.RUNNING
            self.routes.put(cluster.name, cluster.scheduler_address)
            self._event(cluster).set()
            self.log.info(
                "Cluster %s is running (scheduler %s)", cluster.name, cluster.scheduler_address
            )
            self._record(cluster, "started", f"Scheduler running at {cluster.scheduler_address}")
            changed = True
        # The path comes from our backend, never from the message: a scheduler runs user
        # code and must not point the proxy at a socket of its choosing.
        ready = msg.get("handoff") is True
        self.routes.put(
            cluster.name,
            cluster.scheduler_address,
            self.backend.handoff_target(cluster) if ready else {},
        )
        count = msg.get("count")
        # Only an adaptive cluster's scheduler decides its count (within its bounds and
        # the limits); otherwise the count is the one ``scale`` set, and the reply
        # brings the scheduler back to it.
        if cluster.adaptive and _is_count(count) and count != cluster.count:
            lo, hi = cluster.adaptive["minimum"], cluster.adaptive["maximum"]
            count, _ = self.clamp_workers(cluster, min(max(count, lo), hi))
            if self._set_count(cluster, count):
                changed = True
                self._record(cluster, "scaled", f"Adaptive scaling asked for {count} workers")
        self._apply_workers(cluster, msg)
        changed |= self._trim_pending_workers(cluster)
        if changed:
            self._save(cluster)
        self.queue(cluster)

    def _apply_workers(self, cluster: Cluster, msg: dict) -> None:
        reported = msg.get("workers") or {}
        closing = set(msg.get("closing_workers") or ())
        closed = set(msg.get("closed_workers") or ())
        for w in list(cluster.workers.values()):
            if w.status.done:
                continue
            if w.name in closed:
                expected = w.close_expected or w.target.done
                # An unexpected departure is recorded once the backend says how the
                # process ended (``_explain_departures``, in the next pass).
                self._set_worker_target(
                    cluster,
                    w,
                    JobStatus.STOPPED if expected else JobStatus.FAILED,
                    "" if expected else LEFT_UNEXPECTEDLY,
                    record=expected,
                )
                if expected:
                    self._record(cluster, "worker_stopped", "Worker left the scheduler", w.name)
                continue
            if w.name in closing and not w.close_expected:
                w.close_expected = True
                self._set_worker_target(cluster, w, JobStatus.STOPPED)
            info = reported.get(w.name)
            if isinstance(info, dict):
                w.nthreads = int(info.get("nthreads") or 0)
                w.memory_limit = int(info.get("memory_limit") or 0)
                if w.status != JobStatus.RUNNING and not w.target.done:
                    w.status = JobStatus.RUNNING
                    self._worker_failures.pop(cluster.name, None)
                    self.store.update_worker(w)
                    self._record(cluster, "worker_running", "Worker joined the scheduler", w.name)

    def _set_count(self, cluster: Cluster, count: int) -> bool:
        """The one place a cluster's target worker count changes; whether it did."""
        if count == cluster.count:
            return False
        cluster.count = count
        self._trim_pending_workers(cluster)
        return True

    def _trim_pending_workers(self, cluster) -> bool:
        """Give surplus not-yet-running workers target STOPPED (newest first)."""
        active = [w for w in cluster.workers.values() if not w.target.done]
        surplus = len(active) - cluster.count
        if surplus <= 0:
            return False
        pending = sorted(
            (w for w in active if w.status != JobStatus.RUNNING),
            key=lambda w: w.start_time,
            reverse=True,
        )
        for w in pending[:surplus]:
            w.close_expected = True
            self._set_worker_target(cluster, w, JobStatus.STOPPED)
        return bool(pending[:surplus])

    # --- state changes ------------------------------------------------------------------
    def queue(self, cluster: Cluster) -> None:
        self._work.add(cluster.name)

    def _save(self, cluster: Cluster) -> None:
        """Write a changed cluster through: the store, and the listings that show it."""
        self.store.update_cluster(cluster)
        self.listings.changed(cluster)

    def _set_target(self, cluster: Cluster, target: JobStatus, reason: str = "") -> None:
        if cluster.target.done:
            return
        cluster.target = target
        if reason and not cluster.reason:
            cluster.reason = reason
        self.routes.delete(cluster.name)
        self._event(cluster).set()
        self._save(cluster)
        self.queue(cluster)

    def _fail(self, cluster: Cluster, reason: str) -> None:
        if cluster.target.done:
            return
        self.log.warning("Cluster %s failed: %s", cluster.name, reason)
        self._record(cluster, "failed", reason)
        self._set_target(cluster, JobStatus.FAILED, reason)

    def _set_worker_target(self, cluster, worker, target, reason="", record=True):
        if worker.target.done:
            return
        worker.target = target
        if reason:
            worker.reason = reason
            self.log.warning("Cluster %s: worker %s: %s", cluster.name, worker.name, reason)
            if target == JobStatus.FAILED and record:
                self._record(cluster, "worker_failed", reason, worker.name)
        self.store.update_worker(worker)
        self.queue(cluster)

    # --- the reconcile loop -------------------------------------------------------------
    async def _reconcile_loop(self):
        while True:
            name = await self._work.get()
            try:
                cluster = self.clusters.get(name)
                if cluster is not None:
                    await self._pass(cluster)
            finally:
                self._work.done(name)

    async def _pass(self, cluster: Cluster) -> None:
        try:
            await self._reconcile(cluster)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._pass_failed(cluster, exc)
        else:
            self._work.forget(cluster.name)
            delay = self._deferred.pop(cluster.name, None)
            if delay is not None:  # a worker the backend could not start yet
                self._work.add_after(cluster.name, delay)

    def _pass_failed(self, cluster: Cluster, exc: Exception) -> None:
        """Retry a failed pass with backoff; fail the cluster when it keeps failing."""
        if isinstance(exc, GatewayError):
            message, permanent = exc.message, exc.status_code < 500
        else:
            message, permanent = str(exc) or type(exc).__name__, False
        if cluster.target.done:
            what = "Stopping the cluster failed"
        elif cluster.status == JobStatus.CREATED:
            what = "Scheduler failed to start"
        else:
            what = "Reconciling the cluster failed"
        attempts = self._work.failures(cluster.name) + 1
        if permanent or attempts >= self.retry_limit:
            self._work.forget(cluster.name)
            after = f" (after {attempts} attempts)" if attempts > 1 else ""
            if cluster.target.done:
                # Nothing more to try: record it as stopped, and say what may be left.
                self.log.error(
                    "Cluster %s: %s%s: %s; giving up", cluster.name, what, after, message
                )
                self._finish_stop(cluster)
            else:
                self._fail(cluster, f"{what}: {message}{after}")
            return
        delay = self._work.retry(cluster.name)
        self._record(
            cluster, "retrying", f"{what}: {message}; retrying in {delay:g} s (attempt {attempts})"
        )
        self.log.warning(
            "Cluster %s: %s: %s; retrying in %.1f s (attempt %d of %d)",
            cluster.name,
            what,
            message,
            delay,
            attempts,
            self.retry_limit,
            exc_info=not isinstance(exc, GatewayError),
        )

    async def _reconcile(self, cluster: Cluster):
        if cluster.target.done:
            if not cluster.status.done:
                await self._stop_everything(cluster)
            return
        if cluster.status == JobStatus.CREATED:
            await self._start_scheduler(cluster)
        elif cluster.status == JobStatus.RUNNING:
            await self._reconcile_workers(cluster)

    async def _start_scheduler(self, cluster):
        cluster.state = await self.backend.start_cluster(cluster, self.scheduler_env(cluster))
        if cluster.status == JobStatus.CREATED:
            cluster.status = JobStatus.SUBMITTED
        self._save(cluster)
        if cluster.target.done:
            self.queue(cluster)

    async def _reconcile_workers(self, cluster):
        # Stop workers whose target is done.
        to_stop = [w for w in cluster.workers.values() if w.target.done and not w.status.done]
        await self._explain_departures(
            cluster, [w for w in to_stop if w.reason == LEFT_UNEXPECTEDLY]
        )
        await self._bounded(self._stop_worker(cluster, w) for w in to_stop)
        # Start new workers up to the target count.
        active = [w for w in cluster.workers.values() if not w.target.done]
        missing = cluster.count - len(active)
        # A bounded batch per pass, so a big scale-up never holds the loop for long; the
        # cluster is queued again for the rest.
        if missing > WORKERS_PER_PASS:
            missing = WORKERS_PER_PASS
            self.queue(cluster)
        for _ in range(max(0, missing)):
            w = Worker(name=uuid.uuid4().hex, cluster_name=cluster.name, start_time=self._now_ms())
            cluster.workers[w.name] = w
            self.store.add_worker(w)
        to_start = [
            w
            for w in cluster.workers.values()
            if w.status == JobStatus.CREATED and not w.target.done
        ]
        await self._bounded(self._start_worker(cluster, w) for w in to_start)
        # Forget old finished workers so records don't grow without bound.
        finished = [w for w in cluster.workers.values() if w.status.done]
        if len(finished) > 50:
            keep = {w.name for w in cluster.workers.values() if not w.status.done}
            finished.sort(key=lambda w: w.stop_time or 0)
            keep |= {w.name for w in finished[-20:]}
            cluster.workers = {k: v for k, v in cluster.workers.items() if k in keep}
            self.store.prune_workers(cluster.name, keep)

    async def _explain_departures(self, cluster, workers) -> None:
        """Workers the scheduler lost: how their processes ended (an exit code, a signal,
        the last lines they printed), into their reason and the cluster's history.

        A backend may learn of the end a moment after the scheduler (a kubelet reports
        an OOM kill within a second or two): for up to its ``departure_check_seconds``
        it is asked again, before the worker is stopped and what explained it is gone."""
        if not workers:
            return
        deadline = time.monotonic() + self.backend.departure_check_seconds
        while True:
            answers = await self.backend.check_workers(cluster, workers)
            if time.monotonic() >= deadline or all(not alive for alive, _ in answers):
                break
            await asyncio.sleep(0.25)
        for w, (alive, why) in zip(workers, answers, strict=True):
            if not alive and why:
                w.reason = f"{LEFT_UNEXPECTEDLY}: {why}"
                self.store.update_worker(w)
            self._record(cluster, "worker_failed", w.reason, w.name)

    async def _bounded(self, coros):
        sem = asyncio.Semaphore(self.parallelism)

        async def run(c):
            async with sem:
                await c

        await asyncio.gather(*(run(c) for c in coros))

    async def _start_worker(self, cluster, worker):
        try:
            worker.state = await self.backend.start_worker(
                cluster, worker, self.worker_env(cluster)
            )
            worker.status = JobStatus.SUBMITTED
            worker.start_time = self._now_ms()
            self._record(cluster, "worker_started", "Worker started", worker.name)
            self._last_deferral.pop(cluster.name, None)
        except TryLater as exc:
            # not the worker's fault: no failure counted; the cluster tries again later
            worker.status = worker.target = JobStatus.STOPPED
            worker.reason = f"Worker not started yet: {exc.message}"
            worker.stop_time = self._now_ms()
            if self._last_deferral.get(cluster.name) != exc.message:
                self._last_deferral[cluster.name] = exc.message
                self._record(cluster, "worker_deferred", worker.reason, worker.name)
            self.store.update_worker(worker)
            self._deferred[cluster.name] = exc.retry_after  # queued when the pass ends
            return
        except Exception as exc:
            worker.status = worker.target = JobStatus.FAILED
            worker.reason = f"Worker failed to start: {getattr(exc, 'message', exc)}"
            worker.stop_time = self._now_ms()
            self.log.warning("Cluster %s: %s", cluster.name, worker.reason)
            self._record(cluster, "worker_failed", worker.reason, worker.name)
            self._count_worker_failure(cluster, worker.reason)
        self.store.update_worker(worker)
        if worker.target.done:
            self.queue(cluster)

    def _count_worker_failure(self, cluster, reason):
        n = self._worker_failures.get(cluster.name, 0) + 1
        self._worker_failures[cluster.name] = n
        if n >= self.worker_start_failure_limit:
            self._fail(cluster, f"{n} workers in a row failed to start; last: {reason}")
        else:
            self.queue(cluster)

    async def _stop_worker(self, cluster, worker):
        try:
            await self.backend.stop_worker(cluster, worker)
        except Exception:
            self.log.warning(
                "Cluster %s: stopping worker %s failed", cluster.name, worker.name, exc_info=True
            )
        worker.status = worker.target
        worker.stop_time = self._now_ms()
        self.store.update_worker(worker)

    async def _stop_everything(self, cluster):
        self.routes.delete(cluster.name)
        live = [w for w in cluster.workers.values() if not w.status.done]
        for w in live:
            if not w.target.done:
                w.target = JobStatus.STOPPED
        await self._bounded(self._stop_worker(cluster, w) for w in live)
        # A failure here is retried (``_pass_failed``): the scheduler may still run.
        await self.backend.stop_cluster(cluster)
        self._finish_stop(cluster)

    def _finish_stop(self, cluster):
        cluster.status = cluster.target
        cluster.stop_time = self._now_ms()
        cluster.count = 0
        self._save(cluster)
        self._record(
            cluster,
            "stopped",
            "Stopped" if cluster.status == JobStatus.STOPPED else "Stopped after the failure",
        )
        self._event(cluster).set()
        self._worker_failures.pop(cluster.name, None)
        self._last_deferral.pop(cluster.name, None)
        self.log.info(
            "Cluster %s %s",
            cluster.name,
            "stopped" if cluster.status == JobStatus.STOPPED else "failed",
        )

    # --- periodic checks ----------------------------------------------------------------
    async def _periodic(self, period, fn):
        while True:
            await asyncio.sleep(period)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Periodic task %s failed", fn.__name__)

    async def check_timeouts(self):
        now = self.clock()
        pending, running = [], []
        for c in list(self.clusters.values()):
            if c.target.done or c.status.done:
                continue
            if c.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
                if now - c.start_time / 1000 > self.cluster_start_timeout:
                    tail = tail_summary(await self.backend.log_tail(c, lines=5))
                    self._fail(
                        c,
                        f"Cluster did not start within {self.cluster_start_timeout:g} s"
                        + (f"; scheduler log: {tail}" if tail else ""),
                    )
                    continue
                if c.status == JobStatus.SUBMITTED:
                    pending.append(c)
            elif c.status == JobStatus.RUNNING:
                if now - c.last_heartbeat > self.cluster_heartbeat_timeout:
                    self._fail(
                        c,
                        f"No heartbeat from the scheduler for {self.cluster_heartbeat_timeout:g} s",
                    )
                    continue
                running.append(c)
                await self._check_worker_start_timeouts(c, now)
        checked = pending + running
        if checked:
            for c, (alive, reason) in zip(
                checked, await self.backend.check_clusters(checked), strict=True
            ):
                if not alive and not c.target.done:
                    self._fail(c, reason or "Scheduler is gone")
        for c in running:
            if not c.target.done:
                await self._check_workers_alive(c)

    async def _check_worker_start_timeouts(self, cluster: Cluster, now: float) -> None:
        for w in list(cluster.workers.values()):
            if (
                w.status == JobStatus.SUBMITTED
                and not w.target.done
                and now - w.start_time / 1000 > self.worker_start_timeout
            ):
                # what it printed, or why it is not running yet (a pod nothing can schedule)
                tail = tail_summary(await self.backend.log_tail(cluster, w, lines=5))
                self._set_worker_target(
                    cluster,
                    w,
                    JobStatus.FAILED,
                    f"Worker did not start within {self.worker_start_timeout:g} s"
                    + (f"; its log: {tail}" if tail else ""),
                )
                self._count_worker_failure(cluster, w.reason)

    async def _check_workers_alive(self, cluster: Cluster) -> None:
        live = [
            w
            for w in cluster.workers.values()
            if w.status in (JobStatus.SUBMITTED, JobStatus.RUNNING) and not w.target.done
        ]
        if not live:
            return
        for w, (alive, reason) in zip(
            live, await self.backend.check_workers(cluster, live), strict=True
        ):
            if not alive and not w.target.done:
                self._set_worker_target(cluster, w, JobStatus.FAILED, reason or "Worker is gone")
                if w.status == JobStatus.SUBMITTED:
                    self._count_worker_failure(cluster, w.reason)

    async def prune(self):
        for name in self.store.prune(self.db_cluster_max_age):
            self.clusters.pop(name, None)
            self._ready.pop(name, None)
            self.events.forget(name)
        self.listings.changed()


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_groups(value) -> list[str]:
    """The groups of ``shared_groups`` (a comma-separated string or a list), sorted."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise InvalidOptions("shared_groups must be a comma-separated string or a list")
    groups = sorted({str(g).strip() for g in items if str(g).strip()})
    for g in groups:
        if len(g) > 255:
            raise InvalidOptions("Group names are at most 255 characters")
    return groups
