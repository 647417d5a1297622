"""A cluster's history: what happened to it, for its owner, admins and metrics.

The cluster manager records an ``Event`` for every step of a cluster's life (the
kinds below), keeps the last ``EventLog.limit`` of each cluster in memory and in
the store, and tells its listeners (the Prometheus metrics) as it records them.
``GET api/v1/clusters/<name>/events`` returns them (docs/protocol.md, "Events and
logs").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

# Every kind of event, in the order a cluster usually meets them.
KINDS = (
    "created",  # with which options
    "started",  # the scheduler runs (first heartbeat accepted)
    "scaled",  # a new target worker count (by whom)
    "adapted",  # adaptive scaling on (bounds) or off
    "worker_started",  # a worker process or job was started
    "worker_running",  # it joined the scheduler
    "worker_stopped",  # it left on purpose
    "worker_failed",  # it died or never joined (exit code or signal in the message)
    "worker_deferred",  # the backend cannot start it now (a full quota); tried again later
    "retrying",  # a backend call failed and is retried
    "stop_requested",  # by whom, or why (idle timeout, the owner's server stopped)
    "failed",  # with the reason
    "stopped",
)


@dataclass(frozen=True)
class Event:
    time: int  # milliseconds since the epoch, like the wire model's times
    kind: str
    message: str
    worker: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Event:
        return cls(int(d["time"]), str(d["kind"]), str(d["message"]), d.get("worker"))


class EventLog:
    """The last ``limit`` events of each cluster (a bounded ring per cluster)."""

    limit = 200

    def __init__(self, limit: int | None = None):
        if limit is not None:
            self.limit = limit
        self._by_cluster: dict[str, deque[Event]] = {}
        self.listeners: list[Callable[[str, Event], None]] = []

    def record(self, cluster_name: str, event: Event) -> None:
        if event.kind not in KINDS:
            raise ValueError(f"unknown event kind {event.kind!r}")
        ring = self._by_cluster.get(cluster_name)
        if ring is None:
            ring = self._by_cluster[cluster_name] = deque(maxlen=self.limit)
        ring.append(event)
        for listener in self.listeners:
            listener(cluster_name, event)

    def load(self, cluster_name: str, events: Iterable[Event]) -> None:
        """Events of a cluster from the store (a restarted gateway): no listeners told."""
        self._by_cluster[cluster_name] = deque(events, maxlen=self.limit)

    def of(self, cluster_name: str) -> list[Event]:
        return list(self._by_cluster.get(cluster_name, ()))

    def forget(self, cluster_name: str) -> None:
        self._by_cluster.pop(cluster_name, None)
