"""Per-user quotas across all of a user's clusters (beyond dask-gateway-server).

``DaskGateway.max_clusters_per_user``, ``user_max_cores`` and ``user_max_memory``
limit what one user may hold at once. A new cluster that would not fit is refused
with 409; scale and adapt requests are clamped with a warning, like per-cluster
limits. Admins are subject to quotas too (they can raise them in config).
"""

from __future__ import annotations

from .errors import Conflict
from .utils import format_bytes


class Quotas:
    def __init__(self, max_clusters=None, max_cores=None, max_memory=None):
        self.max_clusters = max_clusters
        self.max_cores = max_cores
        self.max_memory = max_memory

    def describe(self) -> str:
        parts = []
        if self.max_clusters is not None:
            parts.append(f"{self.max_clusters} clusters")
        if self.max_cores is not None:
            parts.append(f"{self.max_cores:g} cores")
        if self.max_memory is not None:
            parts.append(format_bytes(self.max_memory))
        return ", ".join(parts) or "unlimited"

    @staticmethod
    def _used(clusters, exclude=None) -> tuple[float, int]:
        cores, memory = 0.0, 0
        for c in clusters:
            if c is exclude or not c.active:
                continue
            c_cores, c_mem = c.resources()
            cores += c_cores
            memory += c_mem
        return cores, memory

    def check_new_cluster(self, user, config: dict, clusters) -> None:
        active = [c for c in clusters if c.active]
        if self.max_clusters is not None and len(active) >= self.max_clusters:
            raise Conflict(
                f"User {user.name} already has {len(active)} running clusters; the limit is "
                f"{self.max_clusters}. Stop one before creating another."
            )
        cores, memory = self._used(active)
        if self.max_cores is not None and cores + config["scheduler_cores"] > self.max_cores:
            raise Conflict(
                f"A new cluster needs {config['scheduler_cores']} cores for its scheduler but "
                f"user {user.name} is using {cores:g} of a {self.max_cores:g}-core quota"
            )
        if self.max_memory is not None and memory + config["scheduler_memory"] > self.max_memory:
            raise Conflict(
                f"A new cluster needs {format_bytes(config['scheduler_memory'])} for its "
                f"scheduler but user {user.name} is using {format_bytes(memory)} of a "
                f"{format_bytes(self.max_memory)} quota"
            )

    def max_workers_for(self, cluster, clusters) -> int | None:
        """How many workers ``cluster`` may have given the owner's other clusters."""
        if self.max_cores is None and self.max_memory is None:
            return None
        cores, memory = self._used(clusters, exclude=cluster)
        cfg = cluster.config
        limits = []
        if self.max_cores is not None:
            free = self.max_cores - cores - cfg.get("scheduler_cores", 1)
            limits.append(int(free // max(cfg.get("worker_cores", 1), 1e-9)))
        if self.max_memory is not None:
            free = self.max_memory - memory - cfg.get("scheduler_memory", 0)
            limits.append(int(free // max(cfg.get("worker_memory", 1), 1)))
        return max(0, min(limits))
