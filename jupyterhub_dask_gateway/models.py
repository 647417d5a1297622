"""In-memory records of clusters and workers, their state machine, and the wire model.

A record has a ``status`` (where it is) and a ``target`` (where handlers want it);
``reconcile`` moves the first toward the second. ``Cluster.to_wire`` renders the
exact model the dask-gateway client accepts (docs/protocol.md, "The cluster model":
no extra keys), ``Cluster.details`` the richer one of the panel. Persistence lives
in ``store``, listing answers in ``listing``; this module does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class JobStatus(enum.IntEnum):
    """Internal status of a cluster or worker (the reference's numbering)."""

    CREATED = 1
    SUBMITTED = 2
    RUNNING = 3
    CLOSING = 4
    STOPPED = 5
    FAILED = 6

    @property
    def done(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.FAILED)


class ClusterStatus(enum.IntEnum):
    """Public status names the client understands."""

    PENDING = 1
    RUNNING = 2
    STOPPING = 3
    STOPPED = 4
    FAILED = 5

    @classmethod
    def from_name(cls, name: str) -> ClusterStatus:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"{name!r} is not a valid ClusterStatus") from None


def public_status(status: JobStatus, target: JobStatus) -> ClusterStatus:
    if status == JobStatus.STOPPED:
        return ClusterStatus.STOPPED
    if status == JobStatus.FAILED:
        return ClusterStatus.FAILED
    if target.done or status == JobStatus.CLOSING:
        return ClusterStatus.STOPPING
    if status == JobStatus.RUNNING:
        return ClusterStatus.RUNNING
    return ClusterStatus.PENDING


@dataclass
class User:
    """An authenticated identity: what every permission check looks at."""

    name: str
    groups: frozenset = frozenset()
    admin: bool = False
    # The Hub scopes of the caller's token (empty for other authenticators): what a
    # request beyond the cluster API may need, such as read:metrics.
    scopes: frozenset = frozenset()

    def may_view(self, cluster: Cluster, as_admin: bool = True) -> bool:
        """Owner, members of a group the cluster is shared with, and admins.

        ``as_admin=False`` leaves the admin right out: what a listing shows an admin
        who did not ask for every user's clusters.
        """
        return (
            (as_admin and self.admin)
            or cluster.username == self.name
            or bool(self.groups & set(cluster.shared_groups))
        )

    def may_manage(self, cluster: Cluster) -> bool:
        """Only owner and admins may scale, adapt, share or stop."""
        return self.admin or cluster.username == self.name


@dataclass(eq=False)
class Worker:
    name: str
    cluster_name: str
    status: JobStatus = JobStatus.CREATED
    target: JobStatus = JobStatus.RUNNING
    state: dict = field(default_factory=dict)
    start_time: int = 0
    stop_time: int | None = None
    close_expected: bool = False
    reason: str = ""
    nthreads: int = 0
    memory_limit: int = 0

    @property
    def active(self) -> bool:
        return not self.status.done


@dataclass(eq=False)
class Cluster:
    name: str
    username: str
    token: str
    tls_cert: str
    tls_key: str
    options: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    status: JobStatus = JobStatus.CREATED
    target: JobStatus = JobStatus.RUNNING
    count: int = 0
    state: dict = field(default_factory=dict)
    scheduler_address: str = ""
    dashboard_address: str = ""
    api_address: str = ""
    start_time: int = 0
    stop_time: int | None = None
    reason: str = ""
    shared_groups: list = field(default_factory=list)
    adaptive: dict | None = None
    workers: dict = field(default_factory=dict)
    last_heartbeat: float = 0.0

    @property
    def public_status(self) -> ClusterStatus:
        return public_status(self.status, self.target)

    @property
    def active(self) -> bool:
        return not self.target.done

    def active_workers(self):
        return [w for w in self.workers.values() if w.active and not w.target.done]

    def to_wire(self, dashboard_prefix: str = "", include_credentials: bool = True) -> dict:
        """The client's cluster model: exactly these eight keys."""
        running = self.public_status == ClusterStatus.RUNNING
        cred = running and include_credentials
        return {
            "name": self.name,
            "dashboard_route": (
                f"{dashboard_prefix}/clusters/{self.name}/status"
                if running and self.dashboard_address
                else None
            ),
            "status": self.public_status.name,
            "start_time": self.start_time,
            "stop_time": self.stop_time,
            "options": self.options,
            "tls_cert": self.tls_cert if cred else None,
            "tls_key": self.tls_key if cred else None,
        }

    def details(self, dashboard_prefix: str = "") -> dict:
        """The panel's and admins' richer model (``api/v1/cluster-details``): no secrets."""
        workers = [
            w for w in self.workers.values() if w.status == JobStatus.RUNNING and not w.target.done
        ]
        cfg = self.config
        return {
            "name": self.name,
            "owner": self.username,
            "status": self.public_status.name,
            "start_time": self.start_time,
            "stop_time": self.stop_time,
            "options": self.options,
            "dashboard_route": self.to_wire(dashboard_prefix)["dashboard_route"],
            "workers": len(workers),
            "threads": sum(w.nthreads for w in workers),
            "cores": len(workers) * cfg.get("worker_cores", 1),
            "memory": sum(w.memory_limit or cfg.get("worker_memory", 0) for w in workers),
            "target_workers": self.count,
            "adaptive": self.adaptive,
            "shared_groups": list(self.shared_groups),
            "reason": self.reason,
        }

    def resources(self) -> tuple[float, int]:
        """(cores, memory bytes) this cluster holds or has asked for: scheduler plus workers."""
        c = self.config
        n = max(self.count, len(self.active_workers()))
        cores = c.get("scheduler_cores", 1) + n * c.get("worker_cores", 1)
        memory = c.get("scheduler_memory", 0) + n * c.get("worker_memory", 0)
        return cores, memory
