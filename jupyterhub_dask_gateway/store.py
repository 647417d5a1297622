"""Durable state: clusters and workers in SQLAlchemy, secrets encrypted with Fernet.

The gateway keeps its working set in memory (``models``) and writes every change
through to the database in short transactions, so a restarted gateway reloads
exactly what it had. Cluster tokens and TLS material are encrypted with a
``MultiFernet`` (several keys allow rotation: the first encrypts, all decrypt).
When the admin configures no key, one is generated once into a 0600 file in the
state directory. Stopped clusters are pruned after a configurable age.
"""

from __future__ import annotations

import json
import time

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)

from .events import Event
from .files import write_private
from .models import Cluster, JobStatus, Worker

metadata = MetaData()

clusters_table = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("username", String(255), nullable=False, index=True),
    Column("status", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("options", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("shared_groups", Text, nullable=False, default="[]"),
    Column("adaptive", Text, nullable=True),
    Column("secrets", LargeBinary, nullable=False),
    Column("scheduler_address", String(255), nullable=False, default=""),
    Column("dashboard_address", String(255), nullable=False, default=""),
    Column("api_address", String(255), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("start_time", Integer, nullable=False),
    Column("stop_time", Integer, nullable=True),
)

workers_table = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column(
        "cluster_name",
        String(255),
        ForeignKey("clusters.name", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("status", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("start_time", Integer, nullable=False),
    Column("stop_time", Integer, nullable=True),
    Column("close_expected", Boolean, nullable=False, default=False),
    Column("reason", Text, nullable=False, default=""),
)


def load_or_create_key_file(path: str) -> list[bytes]:
    """Read Fernet keys (one per line) from ``path``, creating it (0600) with a new key."""
    try:
        with open(path, "rb") as f:
            keys = [line.strip() for line in f if line.strip()]
        if keys:
            return keys
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    # exclusive: two gateways starting at once cannot each write a key; durable: a
    # crash must not keep the database's secrets and lose the key to them
    write_private(path, key + b"\n", exclusive=True, durable=True)
    return [key]


# A cluster's history (events.Event); the manager keeps the last EventLog.limit each.
events_table = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cluster_name", String(255), nullable=False, index=True),
    Column("time", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("worker", String(255), nullable=True),
)


class Store:
    """Write-through persistence of cluster and worker records."""

    def __init__(self, url: str, encrypt_keys: list[bytes], echo: bool = False):
        if not encrypt_keys:
            raise ValueError("At least one encryption key is required")
        self.fernet = MultiFernet([Fernet(k) for k in encrypt_keys])
        kwargs = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False}
        self.engine = create_engine(url, echo=echo, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    # --- secrets -----------------------------------------------------------------------
    def _seal(self, cluster: Cluster) -> bytes:
        payload = json.dumps(
            {"token": cluster.token, "cert": cluster.tls_cert, "key": cluster.tls_key}
        )
        return self.fernet.encrypt(payload.encode())

    def _unseal(self, blob: bytes) -> dict:
        try:
            return json.loads(self.fernet.decrypt(blob))
        except InvalidToken:
            raise RuntimeError(
                "Cannot decrypt cluster secrets: the encryption keys do not match the database"
            ) from None

    # --- clusters ----------------------------------------------------------------------
    def _cluster_row(self, c: Cluster) -> dict:
        return {
            "name": c.name,
            "username": c.username,
            "status": int(c.status),
            "target": int(c.target),
            "count": c.count,
            "options": json.dumps(c.options),
            "config": json.dumps(c.config),
            "state": json.dumps(c.state),
            "shared_groups": json.dumps(sorted(c.shared_groups)),
            "adaptive": json.dumps(c.adaptive) if c.adaptive is not None else None,
            "scheduler_address": c.scheduler_address,
            "dashboard_address": c.dashboard_address,
            "api_address": c.api_address,
            "reason": c.reason,
            "start_time": c.start_time,
            "stop_time": c.stop_time,
        }

    def add_cluster(self, c: Cluster) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(clusters_table).values(secrets=self._seal(c), **self._cluster_row(c))
            )

    def update_cluster(self, c: Cluster) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(clusters_table)
                .where(clusters_table.c.name == c.name)
                .values(**self._cluster_row(c))
            )

    # --- workers -----------------------------------------------------------------------
    @staticmethod
    def _worker_row(w: Worker) -> dict:
        return {
            "name": w.name,
            "cluster_name": w.cluster_name,
            "status": int(w.status),
            "target": int(w.target),
            "state": json.dumps(w.state),
            "start_time": w.start_time,
            "stop_time": w.stop_time,
            "close_expected": w.close_expected,
            "reason": w.reason,
        }

    def add_worker(self, w: Worker) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(workers_table).values(**self._worker_row(w)))

    def update_worker(self, w: Worker) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(workers_table)
                .where(
                    (workers_table.c.cluster_name == w.cluster_name)
                    & (workers_table.c.name == w.name)
                )
                .values(**self._worker_row(w))
            )

    # --- events --------------------------------------------------------------------------
    def add_event(self, cluster_name: str, e: Event) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(events_table).values(cluster_name=cluster_name, **e.to_dict()))

    def trim_events(self, cluster_name: str, keep: int) -> None:
        """Delete all but the newest ``keep`` events of a cluster."""
        with self.engine.begin() as conn:
            newest = (
                select(events_table.c.id)
                .where(events_table.c.cluster_name == cluster_name)
                .order_by(events_table.c.id.desc())
                .limit(keep)
            )
            conn.execute(
                delete(events_table).where(
                    (events_table.c.cluster_name == cluster_name)
                    & events_table.c.id.not_in(newest.scalar_subquery())
                )
            )

    def load_events(self) -> dict[str, list[Event]]:
        """Every cluster's events, oldest first."""
        out: dict[str, list[Event]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table).order_by(events_table.c.id)).mappings()
            for row in rows:
                out.setdefault(row["cluster_name"], []).append(Event.from_dict(row))
        return out

    # --- loading and pruning -----------------------------------------------------------
    def load(self) -> dict[str, Cluster]:
        """All clusters with their workers, secrets decrypted."""
        clusters: dict[str, Cluster] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(select(clusters_table)).mappings():
                secrets = self._unseal(row["secrets"])
                clusters[row["name"]] = Cluster(
                    name=row["name"],
                    username=row["username"],
                    token=secrets["token"],
                    tls_cert=secrets["cert"],
                    tls_key=secrets["key"],
                    options=json.loads(row["options"]),
                    config=json.loads(row["config"]),
                    status=JobStatus(row["status"]),
                    target=JobStatus(row["target"]),
                    count=row["count"],
                    state=json.loads(row["state"]),
                    shared_groups=json.loads(row["shared_groups"] or "[]"),
                    adaptive=json.loads(row["adaptive"]) if row["adaptive"] else None,
                    scheduler_address=row["scheduler_address"],
                    dashboard_address=row["dashboard_address"],
                    api_address=row["api_address"],
                    reason=row["reason"],
                    start_time=row["start_time"],
                    stop_time=row["stop_time"],
                )
            for row in conn.execute(select(workers_table)).mappings():
                cluster = clusters.get(row["cluster_name"])
                if cluster is None:
                    continue
                cluster.workers[row["name"]] = Worker(
                    name=row["name"],
                    cluster_name=row["cluster_name"],
                    status=JobStatus(row["status"]),
                    target=JobStatus(row["target"]),
                    state=json.loads(row["state"]),
                    start_time=row["start_time"],
                    stop_time=row["stop_time"],
                    close_expected=row["close_expected"],
                    reason=row["reason"],
                )
        return clusters

    def prune(self, max_age_s: float, now_ms: int | None = None) -> list[str]:
        """Delete clusters stopped more than ``max_age_s`` ago; returns their names."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        cutoff = now_ms - int(max_age_s * 1000)
        with self.engine.begin() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    select(clusters_table.c.name).where(
                        clusters_table.c.stop_time.is_not(None)
                        & (clusters_table.c.stop_time < cutoff)
                    )
                )
            ]
            if names:
                conn.execute(delete(workers_table).where(workers_table.c.cluster_name.in_(names)))
                conn.execute(delete(events_table).where(events_table.c.cluster_name.in_(names)))
                conn.execute(delete(clusters_table).where(clusters_table.c.name.in_(names)))
        return names

    def prune_workers(self, cluster_name: str, keep: set[str]) -> None:
        """Forget finished workers of a cluster, keeping the named ones."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(workers_table).where(
                    (workers_table.c.cluster_name == cluster_name)
                    & workers_table.c.name.not_in(keep)
                )
            )

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
