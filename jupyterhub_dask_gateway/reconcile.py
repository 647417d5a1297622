"""The cluster manager: the only code that changes clusters and talks to the backend.

Handlers call the small public API here (``create``, ``stop``, ``scale``,
``adapt``, ``share``, ``on_heartbeat``); those set *targets* and queue the
cluster. A bounded pool of reconciler tasks moves each cluster's and worker's
*status* toward its target (start the scheduler, start or stop workers, stop
everything), one pass per cluster at a time. A periodic check turns stuck or
dead things into FAILED records with a reason the user can read, and replaces
dead workers up to the target count. Every change is written through to the
store; the proxy's route table follows the RUNNING clusters.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .addresses import REPORTED
from .errors import Conflict, InvalidOptions, NotFound
from .models import Cluster, ClusterStatus, JobStatus, Worker
from .routes import RouteTable
from .tls import new_keypair
from .utils import format_bytes, now_ms

# The most workers any request may ask for (scale, adapt, a heartbeat's count), whatever
# the limits say: a bound on the rows one request can create.
MAX_WORKERS = 10_000
# Worker records created per reconcile pass (the rest follow in the next passes).
WORKERS_PER_PASS = 100


class ClusterManager:
    """Owns the in-memory clusters, the store, the backend and the reconcile loops."""

    def __init__(self, app, backend, store, log):
        self.app = app
        self.backend = backend
        self.store = store
        self.log = log
        self.clusters: dict[str, Cluster] = {}
        self.routes = RouteTable()
        # Listing answers: (user, groups, status filter, prefix) ->
        # (Cluster.listing_generation, body); see handlers.ClustersHandler.
        self.listings: dict[tuple, tuple[int, bytes]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._worker_failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._http = AsyncHTTPClient(force_instance=True)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self):
        self.clusters = self.store.load()
        now = time.time()
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
        for i in range(self.app.parallelism):
            self._tasks.append(loop.create_task(self._reconcile_loop(), name=f"reconcile-{i}"))
        self._tasks.append(
            loop.create_task(self._periodic(self.app.check_timeouts_period, self.check_timeouts))
        )
        self._tasks.append(loop.create_task(self._periodic(self.app.db_cleanup_period, self.prune)))

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
        self._http.close()

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

    # --- handler API --------------------------------------------------------------------
    async def create(self, user, requested_options) -> Cluster:
        await self.backend.check_owner(user.name)
        options = await self.backend.get_cluster_options(user)
        values = options.parse(requested_options)
        shared = []
        if self.app.sharing_option and "shared_groups" in values:
            shared = parse_groups(values["shared_groups"])
        overrides = options.overrides(values, user)
        config = self.backend.make_cluster_config(overrides)
        cfg = config.to_dict()
        self.app.quotas.check_new_cluster(user, cfg, self.user_clusters(user.name))
        name = uuid.uuid4().hex
        cert, key = await asyncio.get_running_loop().run_in_executor(
            None, new_keypair, name, self.app.tls_key_type
        )
        # Again, with no await between the check and the insert: requests that passed the
        # first check concurrently are decided one by one here.
        self.app.quotas.check_new_cluster(user, cfg, self.user_clusters(user.name))
        cluster = Cluster(
            name=name,
            username=user.name,
            token=secrets.token_hex(32),
            tls_cert=cert,
            tls_key=key,
            options=values,
            config=cfg,
            start_time=now_ms(),
            shared_groups=shared,
        )
        self.clusters[name] = cluster
        Cluster.listings_changed()
        self.store.add_cluster(cluster)
        self.log.info("Created cluster %s for user %s", name, user.name)
        self.queue(cluster)
        return cluster

    def stop(self, cluster: Cluster, reason: str = "") -> None:
        if cluster.active:
            self.log.info("Stopping cluster %s%s", cluster.name, f" ({reason})" if reason else "")
            self._set_target(cluster, JobStatus.STOPPED, reason)

    def share(self, cluster: Cluster, groups: list[str]) -> None:
        cluster.shared_groups = sorted(set(groups))
        self.store.update_cluster(cluster)

    def clamp_workers(self, cluster: Cluster, n: int) -> tuple[int, str | None]:
        """Clamp a worker count to the cluster limit and the owner's quota, with a message."""
        limit = cluster.config.get("max_workers")
        quota = self.app.quotas.max_workers_for(cluster, self.user_clusters(cluster.username))
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
                f"({self.app.quotas.describe()}). Scaling to {quota} instead."
            )
            n = quota
        return n, msg

    async def scale(self, cluster: Cluster, count) -> tuple[bool, str | None]:
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidOptions(f"Scale expects a non-negative integer, got {count!r}")
        if count > MAX_WORKERS:
            raise InvalidOptions(f"Scale to at most {MAX_WORKERS} workers, got {count}")
        self._require_running(cluster)
        count, msg = self.clamp_workers(cluster, count)
        await self._send_to_scheduler(cluster, {"op": "scale", "count": count})
        cluster.adaptive = None
        cluster.count = count
        self._trim_pending_workers(cluster)
        self.store.update_cluster(cluster)
        self.queue(cluster)
        return msg is None, msg

    async def adapt(self, cluster: Cluster, minimum, maximum, active=True):
        for label, value in (("minimum", minimum), ("maximum", maximum)):
            if value is not None and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value <= MAX_WORKERS
            ):
                raise InvalidOptions(
                    f"Adapt expects {label} to be an integer from 0 to {MAX_WORKERS} or null, "
                    f"got {value!r}"
                )
        if not isinstance(active, bool):
            raise InvalidOptions(f"Adapt expects active to be a bool, got {active!r}")
        self._require_running(cluster)
        limit = cluster.config.get("max_workers")
        quota = self.app.quotas.max_workers_for(cluster, self.user_clusters(cluster.username))
        caps = [c for c in (limit, quota) if c is not None]
        cap = min(caps) if caps else None
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
        await self._send_to_scheduler(
            cluster, {"op": "adapt", "minimum": lo, "maximum": hi, "active": active}
        )
        cluster.adaptive = {"minimum": lo, "maximum": hi} if active else None
        self.store.update_cluster(cluster)
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

    # --- heartbeats ---------------------------------------------------------------------
    async def heartbeat(self, cluster: Cluster, msg: dict) -> bool:
        """Apply a (type-checked) heartbeat, after checking the addresses it claims.

        The first heartbeat's addresses must be where the backend started the scheduler
        (``Backend.check_addresses``); later ones may not change them. A refusal fails
        the cluster with the reason and returns False.
        """
        if cluster.target.done or cluster.status.done:
            return True
        reported = {f: str(msg.get(f) or "") for f in REPORTED}
        if cluster.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
            why = await self.backend.check_addresses(cluster, reported)
            if why:
                self._fail(cluster, f"Refused the scheduler's addresses: {why}")
                return False
        elif cluster.status == JobStatus.RUNNING:
            known = {
                "scheduler_address": cluster.scheduler_address,
                "dashboard_address": cluster.dashboard_address,
                "api_address": cluster.api_address,
            }
            # Fields a heartbeat leaves out are unchanged; any it states must be the same.
            changed = [f for f in REPORTED if f in msg and reported[f] != known[f]]
            if changed:
                self._fail(
                    cluster, f"The scheduler changed its {', '.join(changed)} after it started"
                )
                return False
        self.on_heartbeat(cluster, msg)
        return True

    def on_heartbeat(self, cluster: Cluster, msg: dict) -> None:
        if cluster.target.done or cluster.status.done:
            return
        cluster.last_heartbeat = time.time()
        changed = False
        if cluster.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
            cluster.scheduler_address = str(msg.get("scheduler_address") or "")
            cluster.dashboard_address = str(msg.get("dashboard_address") or "")
            cluster.api_address = str(msg.get("api_address") or "")
            if not cluster.scheduler_address.startswith("tls://"):
                self._fail(cluster, "Scheduler reported an address without TLS")
                return
            cluster.status = JobStatus.RUNNING
            self.routes.put(cluster.name, cluster.scheduler_address)
            self._event(cluster).set()
            self.log.info(
                "Cluster %s is running (scheduler %s)", cluster.name, cluster.scheduler_address
            )
            changed = True
        if cluster.status == JobStatus.RUNNING:
            # The path comes from our backend, never from the message: a scheduler runs user
            # code and must not point the proxy at a socket of its choosing.
            ready = msg.get("handoff") is True
            self.routes.put(
                cluster.name,
                cluster.scheduler_address,
                self.backend.handoff_target(cluster) if ready else {},
            )
        count = msg.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count > MAX_WORKERS:
            count = None
        # Only a new count (adaptive's) needs clamping; the quota check walks the owner's
        # clusters, which every steady heartbeat of every cluster would otherwise repeat.
        if isinstance(count, int) and count >= 0 and count != cluster.count:
            count, _ = self.clamp_workers(cluster, count)
            if count != cluster.count:
                cluster.count = count
                changed = True
        adaptive = msg.get("adaptive")
        if adaptive != cluster.adaptive and (adaptive is None or isinstance(adaptive, dict)):
            cluster.adaptive = adaptive
            changed = True
        reported = msg.get("workers") or {}
        closing = set(msg.get("closing_workers") or ())
        closed = set(msg.get("closed_workers") or ())
        for w in list(cluster.workers.values()):
            if w.status.done:
                continue
            if w.name in closed:
                expected = w.close_expected or w.target.done
                self._set_worker_target(
                    cluster,
                    w,
                    JobStatus.STOPPED if expected else JobStatus.FAILED,
                    "" if expected else "Worker left the scheduler unexpectedly",
                )
                continue
            if w.name in closing and not w.close_expected:
                w.close_expected = True
                self._set_worker_target(cluster, w, JobStatus.STOPPED)
            info = reported.get(w.name)
            if info is not None and isinstance(info, dict):
                w.nthreads = int(info.get("nthreads") or 0)
                w.memory_limit = int(info.get("memory_limit") or 0)
                if w.status != JobStatus.RUNNING and not w.target.done:
                    w.status = JobStatus.RUNNING
                    self._worker_failures.pop(cluster.name, None)
                    self.store.update_worker(w)
        changed |= self._trim_pending_workers(cluster)
        if changed:
            self.store.update_cluster(cluster)
        self.queue(cluster)

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
        if cluster.name not in self._queued:
            self._queued.add(cluster.name)
            self._queue.put_nowait(cluster.name)

    def _set_target(self, cluster: Cluster, target: JobStatus, reason: str = "") -> None:
        if cluster.target.done:
            return
        cluster.target = target
        if reason and not cluster.reason:
            cluster.reason = reason
        self.routes.delete(cluster.name)
        self._event(cluster).set()
        self.store.update_cluster(cluster)
        self.queue(cluster)

    def _fail(self, cluster: Cluster, reason: str) -> None:
        self.log.warning("Cluster %s failed: %s", cluster.name, reason)
        self._set_target(cluster, JobStatus.FAILED, reason)

    def _set_worker_target(self, cluster, worker, target, reason=""):
        if worker.target.done:
            return
        worker.target = target
        if reason:
            worker.reason = reason
            self.log.warning("Cluster %s: worker %s: %s", cluster.name, worker.name, reason)
        self.store.update_worker(worker)
        self.queue(cluster)

    # --- the reconcile loop -------------------------------------------------------------
    async def _reconcile_loop(self):
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            cluster = self.clusters.get(name)
            if cluster is None:
                continue
            lock = self._locks.setdefault(name, asyncio.Lock())
            if lock.locked():
                # Another task is on it; make sure it gets another pass afterwards.
                asyncio.get_running_loop().call_later(0.05, self.queue, cluster)
                continue
            async with lock:
                try:
                    await self._reconcile(cluster)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.log.exception("Reconciling cluster %s failed", name)
                    self._fail(cluster, f"Internal error: {exc}")

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
        env = self.app.scheduler_env(cluster)
        try:
            cluster.state = await self.backend.start_cluster(cluster, env)
        except Exception as exc:
            self._fail(cluster, f"Scheduler failed to start: {getattr(exc, 'message', exc)}")
            return
        if cluster.status == JobStatus.CREATED:
            cluster.status = JobStatus.SUBMITTED
        self.store.update_cluster(cluster)
        if cluster.target.done:
            self.queue(cluster)

    async def _reconcile_workers(self, cluster):
        # Stop workers whose target is done.
        to_stop = [w for w in cluster.workers.values() if w.target.done and not w.status.done]
        await self._bounded(self._stop_worker(cluster, w) for w in to_stop)
        # Start new workers up to the target count.
        active = [w for w in cluster.workers.values() if not w.target.done]
        missing = cluster.count - len(active)
        # A bounded batch per pass, so a big scale-up never holds the loop for long; the
        # cluster is queued again for the rest.
        if missing > WORKERS_PER_PASS:
            missing = WORKERS_PER_PASS
            self.queue(cluster)
        new = []
        for _ in range(max(0, missing)):
            w = Worker(name=uuid.uuid4().hex, cluster_name=cluster.name, start_time=now_ms())
            cluster.workers[w.name] = w
            self.store.add_worker(w)
            new.append(w)
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

    async def _bounded(self, coros):
        sem = asyncio.Semaphore(self.app.parallelism)

        async def run(c):
            async with sem:
                await c

        await asyncio.gather(*(run(c) for c in coros))

    async def _start_worker(self, cluster, worker):
        env = self.app.worker_env(cluster)
        try:
            worker.state = await self.backend.start_worker(cluster, worker, env)
            worker.status = JobStatus.SUBMITTED
            worker.start_time = now_ms()
        except Exception as exc:
            worker.status = worker.target = JobStatus.FAILED
            worker.reason = f"Worker failed to start: {getattr(exc, 'message', exc)}"
            worker.stop_time = now_ms()
            self.log.warning("Cluster %s: %s", cluster.name, worker.reason)
            self._count_worker_failure(cluster, worker.reason)
        self.store.update_worker(worker)
        if worker.target.done:
            self.queue(cluster)

    def _count_worker_failure(self, cluster, reason):
        n = self._worker_failures.get(cluster.name, 0) + 1
        self._worker_failures[cluster.name] = n
        if n >= self.app.worker_start_failure_limit:
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
        worker.stop_time = now_ms()
        self.store.update_worker(worker)

    async def _stop_everything(self, cluster):
        self.routes.delete(cluster.name)
        live = [w for w in cluster.workers.values() if not w.status.done]
        for w in live:
            if not w.target.done:
                w.target = JobStatus.STOPPED
        await self._bounded(self._stop_worker(cluster, w) for w in live)
        try:
            await self.backend.stop_cluster(cluster)
        except Exception:
            self.log.warning("Stopping cluster %s failed", cluster.name, exc_info=True)
        cluster.status = cluster.target
        cluster.stop_time = now_ms()
        cluster.count = 0
        self.store.update_cluster(cluster)
        self._event(cluster).set()
        self._worker_failures.pop(cluster.name, None)
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
        app = self.app
        now = time.time()
        pending, running = [], []
        for c in list(self.clusters.values()):
            if c.target.done or c.status.done:
                continue
            if c.status in (JobStatus.CREATED, JobStatus.SUBMITTED):
                if now - c.start_time / 1000 > app.cluster_start_timeout:
                    tail = self._log_tail(c)
                    self._fail(
                        c,
                        f"Cluster did not start within {app.cluster_start_timeout:g} s"
                        + (f"; scheduler log: {tail}" if tail else ""),
                    )
                    continue
                if c.status == JobStatus.SUBMITTED:
                    pending.append(c)
            elif c.status == JobStatus.RUNNING:
                if now - c.last_heartbeat > app.cluster_heartbeat_timeout:
                    self._fail(
                        c,
                        f"No heartbeat from the scheduler for {app.cluster_heartbeat_timeout:g} s",
                    )
                    continue
                running.append(c)
                for w in c.workers.values():
                    if (
                        w.status == JobStatus.SUBMITTED
                        and not w.target.done
                        and now - w.start_time / 1000 > app.worker_start_timeout
                    ):
                        self._set_worker_target(
                            c,
                            w,
                            JobStatus.FAILED,
                            f"Worker did not start within {app.worker_start_timeout:g} s",
                        )
                        self._count_worker_failure(c, w.reason)
        checked = pending + running
        if checked:
            for c, (alive, reason) in zip(
                checked, await self.backend.check_clusters(checked), strict=True
            ):
                if not alive and not c.target.done:
                    self._fail(c, reason or "Scheduler is gone")
        for c in running:
            if c.target.done:
                continue
            live = [
                w
                for w in c.workers.values()
                if w.status in (JobStatus.SUBMITTED, JobStatus.RUNNING) and not w.target.done
            ]
            if not live:
                continue
            for w, (alive, reason) in zip(
                live, await self.backend.check_workers(c, live), strict=True
            ):
                if not alive and not w.target.done:
                    self._set_worker_target(c, w, JobStatus.FAILED, reason or "Worker is gone")
                    if w.status == JobStatus.SUBMITTED:
                        self._count_worker_failure(c, w.reason)

    def _log_tail(self, cluster) -> str:
        getter = getattr(self.backend, "_last_log_lines", None)
        return getter(cluster.state) if getter else ""

    async def prune(self):
        names = self.store.prune(self.app.db_cluster_max_age)
        for name in names:
            self.clusters.pop(name, None)
            Cluster.listings_changed()
            self._ready.pop(name, None)
            self._locks.pop(name, None)


def parse_groups(value) -> list[str]:
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


def describe_resources(cores: float, memory: int) -> str:
    return f"{cores:g} cores, {format_bytes(memory)}"
