"""Prometheus metrics of the gateway, served at ``GET <base_url>metrics``.

This module owns every metric's name, labels and meaning (listed in
docs/operations.md), and a ``CollectorRegistry`` per gateway, not
``prometheus_client``'s process-wide default one, so two gateways in one process
(tests) never collide. Names and labels follow JupyterHub's own metrics: a
``dask_gateway_`` prefix, ``request_duration_seconds{method, handler, code}``, enum
labels in lower case with every value present from the start, and no per-user or
per-cluster labels.

Nothing is counted on the hot paths but the request histogram: the cluster, worker,
resource, queue and heartbeat gauges are computed when Prometheus scrapes, from the
cluster manager's state (:class:`StateCollector`); start durations come from the
manager's event log (``events.EventLog.listeners``); the TCP proxy, its own process,
sends its counters with each route poll (``proxy/stats.py``) and the last report is
exposed here.

Who may read the metrics is the handler's business (``handlers.MetricsHandler``).
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .models import ClusterStatus, JobStatus
from .proxy.stats import CONNECTION_KINDS, parse_report

PREFIX = "dask_gateway"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The Hub scope that lets a token read the metrics (the Hub's own name for it).
METRICS_SCOPE = "read:metrics"

#: Cluster start durations (JupyterHub's spawn-duration buckets): starts take seconds
#: on the local backend and minutes in a busy job queue.
START_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600, float("inf"))
START_OUTCOMES = ("running", "failed")

CLUSTER_STATUSES = tuple(s.name.lower() for s in ClusterStatus)
# Workers that hold, or are about to hold, resources; finished worker records are
# trimmed per cluster and say nothing about the gateway's load.
WORKER_STATUSES = ("pending", "running", "stopping")

_STARTING = (JobStatus.CREATED, JobStatus.SUBMITTED)


def may_read_metrics(user) -> bool:
    """Admins, and Hub tokens that carry ``read:metrics``."""
    return user.admin or METRICS_SCOPE in user.scopes


def worker_status(worker) -> str | None:
    """The worker's label value, or None for a finished worker."""
    if worker.status.done:
        return None
    if worker.target.done or worker.status == JobStatus.CLOSING:
        return "stopping"
    return "running" if worker.status == JobStatus.RUNNING else "pending"


class GatewayMetrics:
    """The metrics of one gateway: its registry, the recorded metrics and the proxy's report.

    Parameters
    ----------
    manager : reconcile.ClusterManager
        Whose clusters the gauges count (read at scrape time, never written).
    backend : str
        The ``backend`` label's value (``DaskGateway.backend_class``).
    proxy_report_max_age : float
        Seconds after which the proxy's last report is no longer exposed (a proxy that
        stopped polling should not look idle forever).
    monotonic : callable
        The clock that ages the proxy's report (injectable for tests).
    """

    def __init__(
        self,
        manager,
        backend: str,
        *,
        proxy_report_max_age: float = 60.0,
        monotonic=time.monotonic,
    ):
        self.manager = manager
        self.backend = backend
        self.proxy_report_max_age = proxy_report_max_age
        self.monotonic = monotonic
        self.registry = CollectorRegistry()
        # What JupyterHub's default registry has too: the process's CPU, memory, fds, GC.
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Duration of HTTP requests, by method, handler class and status code",
            ["method", "handler", "code"],
            namespace=PREFIX,
            registry=self.registry,
        )
        self.start_duration = Histogram(
            "cluster_start_duration_seconds",
            "Seconds from a cluster's creation until its scheduler ran (outcome running) "
            "or it failed without ever running (outcome failed)",
            ["backend", "outcome"],
            buckets=START_BUCKETS,
            namespace=PREFIX,
            registry=self.registry,
        )
        for outcome in START_OUTCOMES:
            self.start_duration.labels(backend, outcome)
        self.registry.register(StateCollector(self))
        # The proxy's last counters (proxy/stats.py) and when they came.
        self.proxy_report: dict[str, int] | None = None
        self._proxy_report_at = 0.0
        self._warned_malformed = False
        # (method, handler class, status) -> the histogram's child: labels() takes a lock
        # and formats strings, which the request path need not pay every time.
        self._request_children: dict[tuple, object] = {}

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    # --- recorded as things happen ---------------------------------------------------------
    def observe_request(self, handler) -> None:
        """Record a finished request (``handlers.BaseHandler.on_finish``)."""
        request = handler.request
        method = request.method
        if method not in handler.SUPPORTED_METHODS:
            method = "other"  # any token is a method on the wire: keep the label bounded
        cls = type(handler)
        key = (method, cls, handler.get_status())
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_duration.labels(
                method=method, handler=f"{cls.__module__}.{cls.__name__}", code=str(key[2])
            )
        child.observe(request.request_time())

    def on_event(self, cluster_name: str, event) -> None:
        """A cluster event (``events.EventLog`` listener): start durations."""
        if event.kind not in ("started", "failed"):
            return
        cluster = self.manager.clusters.get(cluster_name)
        if cluster is None:
            return
        if event.kind == "failed" and cluster.status not in _STARTING:
            return  # it ran before it failed: not a failed start
        outcome = "running" if event.kind == "started" else "failed"
        seconds = max(0.0, (event.time - cluster.start_time) / 1000)
        self.start_duration.labels(self.backend, outcome).observe(seconds)

    def proxy_reported(self, value: str | None) -> None:
        """The stats header of a route poll (already authenticated by the proxy token)."""
        if value is None:
            return  # a proxy from before the stats: nothing to show
        report = parse_report(value)
        if report is None:
            if not self._warned_malformed:
                self._warned_malformed = True
                self.manager.log.warning("Ignoring the proxy's malformed stats header")
            return
        self.proxy_report = report
        self._proxy_report_at = self.monotonic()

    def current_proxy_report(self) -> dict[str, int] | None:
        if self.proxy_report is None:
            return None
        if self.monotonic() - self._proxy_report_at > self.proxy_report_max_age:
            return None
        return self.proxy_report


class StateCollector:
    """Gauges computed at scrape time from the cluster manager, and the proxy's counters."""

    def __init__(self, metrics: GatewayMetrics):
        self.metrics = metrics

    def collect(self):
        manager = self.metrics.manager
        backend = self.metrics.backend
        clusters = dict.fromkeys(CLUSTER_STATUSES, 0)
        workers = dict.fromkeys(WORKER_STATUSES, 0)
        cores, memory, lag = 0.0, 0, 0.0
        now = manager.clock()
        for cluster in manager.clusters.values():
            status = cluster.public_status
            clusters[status.name.lower()] += 1
            if cluster.status.done:
                continue
            # What the quotas count: the scheduler, plus the larger of the target
            # count and the workers still alive.
            c_cores, c_memory = cluster.resources()
            cores += c_cores
            memory += c_memory
            if status == ClusterStatus.RUNNING:
                lag = max(lag, now - cluster.last_heartbeat)
            for worker in cluster.workers.values():
                label = worker_status(worker)
                if label is not None:
                    workers[label] += 1

        family = GaugeMetricFamily(
            f"{PREFIX}_clusters",
            "Clusters the gateway holds, by status (stopped and failed ones until they are "
            "pruned after db_cluster_max_age)",
            labels=["status", "backend"],
        )
        for label, n in clusters.items():
            family.add_metric([label, backend], n)
        yield family
        family = GaugeMetricFamily(
            f"{PREFIX}_workers",
            "Workers of active clusters, by status",
            labels=["status", "backend"],
        )
        for label, n in workers.items():
            family.add_metric([label, backend], n)
        yield family
        yield GaugeMetricFamily(
            f"{PREFIX}_cores_in_use",
            "Cores held or asked for by clusters that have not stopped (schedulers and "
            "workers, as the quotas count them)",
            value=cores,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_memory_in_use_bytes",
            "Memory held or asked for by clusters that have not stopped, in bytes",
            value=memory,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconcile_queue_depth",
            "Clusters waiting for a reconcile pass",
            value=manager.queue_depth,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_heartbeat_lag_seconds",
            "Seconds since the oldest last heartbeat among running clusters (0 with none)",
            value=max(lag, 0.0),
        )
        yield from self._proxy()

    def _proxy(self):
        report = self.metrics.current_proxy_report()
        if report is None:
            return
        started = report["started"] / 1000
        family = CounterMetricFamily(
            f"{PREFIX}_proxy_connections",
            "Connections the TCP proxy accepted, by what became of them (as of its last "
            "route poll)",
            labels=["kind"],
        )
        for kind in CONNECTION_KINDS:
            family.add_metric([kind], report[kind], created=started)
        yield family
        family = CounterMetricFamily(
            f"{PREFIX}_proxy_bytes",
            "Bytes the TCP proxy spliced: in, from clients; out, towards clients",
            labels=["direction"],
        )
        family.add_metric(["in"], report["in"], created=started)
        family.add_metric(["out"], report["out"], created=started)
        yield family
        yield GaugeMetricFamily(
            f"{PREFIX}_proxy_open_connections",
            "Connections the TCP proxy is splicing (handed-off sockets are not its own)",
            value=report["open"],
        )
