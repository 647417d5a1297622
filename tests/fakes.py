"""In-memory stand-ins for unit tests of the cluster manager and what drives it.

``FakeBackend`` records calls and fails on request, ``FakeClock`` is moved by hand,
and the ``make_manager`` fixture (import it into a test module) builds a real
``ClusterManager`` over them with an in-memory store.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet
from traitlets.config import Config

from jupyterhub_dask_gateway.backends.base import Backend
from jupyterhub_dask_gateway.models import ClusterStatus, JobStatus, User
from jupyterhub_dask_gateway.quotas import Quotas
from jupyterhub_dask_gateway.reconcile import ClusterManager
from jupyterhub_dask_gateway.store import Store

ALICE = User("alice")
GB = 2**30


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend(Backend):
    """Records every call. ``fail`` maps a method name to what its calls raise, in turn
    (``None``: that call works); the last entry stays for every later call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str]] = []
        self.envs: dict[str, dict] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.dead_workers: set[str] = set()
        self.log_text = ""

    def _maybe_fail(self, method: str) -> None:
        errors = self.fail.get(method)
        if errors:
            error = errors.pop(0) if len(errors) > 1 else errors[0]
            if error is not None:
                raise error

    async def start_cluster(self, cluster, env):
        self.calls.append(("start_cluster", cluster.name))
        self._maybe_fail("start_cluster")
        self.envs[cluster.name] = env
        return {"pid": 1}

    async def stop_cluster(self, cluster):
        self.calls.append(("stop_cluster", cluster.name))
        self._maybe_fail("stop_cluster")

    async def start_worker(self, cluster, worker, env):
        self.calls.append(("start_worker", worker.name))
        self._maybe_fail("start_worker")
        return {"pid": 2}

    async def stop_worker(self, cluster, worker):
        self.calls.append(("stop_worker", worker.name))

    async def check_workers(self, cluster, workers):
        return [(w.name not in self.dead_workers, "exited with code 1") for w in workers]

    async def confirm_address(self, cluster, ips, port):
        return ""  # every address is "where it started the scheduler"

    async def log_tail(self, cluster, worker=None, lines=50):
        return self.log_text

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def make_manager(clock):
    made = []

    async def make(quotas=None, backend_config=None, **settings):
        backend = FakeBackend(config=Config(backend_config or {}))
        store = Store("sqlite://", [Fernet.generate_key()])
        settings = {
            "api_url": "http://127.0.0.1:1/api/v1",
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.04,
            # The periodic loops never fire by themselves: tests call them.
            "check_timeouts_period": 3600,
            **settings,
        }
        manager = ClusterManager(
            backend=backend, store=store, quotas=quotas or Quotas(), clock=clock, **settings
        )
        sent: list[tuple[str, dict]] = []

        async def send_to_scheduler(cluster, msg):
            sent.append((cluster.name, msg))

        manager._send_to_scheduler = send_to_scheduler
        manager.sent = sent
        await manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.shutdown(stop_clusters=False)
        manager.store.close()


async def settled(manager, predicate, what: str, timeout: float = 5):
    """Poll (the reconcile tasks run on this loop) until ``predicate()``, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def heartbeat(count=None, workers=(), **extra):
    msg = {
        "scheduler_address": "tls://127.0.0.1:40000",
        "dashboard_address": "http://127.0.0.1:40001",
        "api_address": "http://127.0.0.1:40002",
        "workers": {w: {"nthreads": 1, "memory_limit": GB} for w in workers},
        **extra,
    }
    if count is not None:
        msg["count"] = count
    return msg


async def running_cluster(manager, user=ALICE, options=None):
    cluster = await manager.create(user, options or {})
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the scheduler start")
    await manager.heartbeat(cluster, heartbeat())
    assert cluster.public_status == ClusterStatus.RUNNING
    return cluster
