"""The cluster manager's policy, against an in-memory backend and a fake clock.

These run in seconds; the real-process tests (test_client_e2e, test_restart, the
backends') prove the features end to end. Here every setting the manager applies
is exercised: the start, heartbeat and worker timeouts, ``worker_start_failure_limit``,
``idle_timeout`` (handed to the scheduler), the per-user quotas, ``sharing_option``,
retries with backoff, and who owns a cluster's worker count.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from fakes import ALICE, GB, heartbeat, running_cluster, settled
from jupyterhub_dask_gateway.errors import Conflict, Forbidden, InvalidOptions, TryLater
from jupyterhub_dask_gateway.models import ClusterStatus, JobStatus, User
from jupyterhub_dask_gateway.quotas import Quotas
from jupyterhub_dask_gateway.workqueue import WorkQueue

# --- the work queue ----------------------------------------------------------------------


async def test_work_queue_never_hands_out_a_key_twice_at_once():
    q = WorkQueue(base_delay=0.01, max_delay=0.04)
    q.add("a")
    q.add("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.add("a")  # while processing: marked dirty, not queued
    assert len(q) == 0
    q.done("a")  # ... and queued again now
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_work_queue_backs_off_exponentially_up_to_the_cap():
    q = WorkQueue(base_delay=0.01, max_delay=0.04)
    assert [q.retry("a") for _ in range(5)] == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert q.failures("a") == 5
    q.forget("a")
    assert q.failures("a") == 0 and q.retry("a") == 0.01
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(q.get(), 1) == "a"
    assert loop.time() - start >= 0.009
    q.close()


# --- starting, retries, timeouts -----------------------------------------------------------


async def test_scheduler_env_carries_the_settings_the_preload_applies(make_manager):
    manager = await make_manager(
        cluster_heartbeat_period=7,
        backend_config={"ClusterConfig": {"idle_timeout": 90, "adaptive_period": 2}},
    )
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.name in manager.backend.envs, "the scheduler start")
    env = manager.backend.envs[cluster.name]
    assert env["JHDG_IDLE_TIMEOUT"] == "90.0"  # the scheduler stops itself when idle
    assert env["JHDG_HEARTBEAT_PERIOD"] == "7.0"
    assert env["JHDG_ADAPTIVE_PERIOD"] == "2.0"
    assert env["DASK_GATEWAY_API_TOKEN"] == cluster.token
    assert env["DASK_GATEWAY_API_URL"] == "http://127.0.0.1:1/api/v1"


async def test_a_transient_start_error_is_retried_with_backoff(make_manager):
    manager = await make_manager(retry_limit=4)
    manager.backend.fail["start_cluster"] = [RuntimeError("busy"), RuntimeError("busy"), None]
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the third attempt")
    assert manager.backend.count("start_cluster") == 3
    assert cluster.public_status == ClusterStatus.PENDING and not cluster.reason


async def test_a_start_that_keeps_failing_fails_with_its_reason(make_manager):
    manager = await make_manager(retry_limit=3)
    manager.backend.fail["start_cluster"] = [RuntimeError("sbatch: invalid partition")]
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status.done, "the cluster to fail")
    assert cluster.status == JobStatus.FAILED
    assert manager.backend.count("start_cluster") == 3
    assert cluster.reason == (
        "Scheduler failed to start: sbatch: invalid partition (after 3 attempts)"
    )
    assert manager.backend.count("stop_cluster") == 1  # whatever it left, stopped


async def test_a_user_error_from_the_backend_fails_at_once(make_manager):
    manager = await make_manager(retry_limit=5)
    manager.backend.fail["start_cluster"] = [InvalidOptions("no such image")]
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status.done, "the cluster to fail")
    assert manager.backend.count("start_cluster") == 1
    assert cluster.reason == "Scheduler failed to start: no such image"


async def test_a_failing_stop_is_retried_then_recorded(make_manager):
    manager = await make_manager(retry_limit=3)
    cluster = await running_cluster(manager)
    manager.backend.fail["stop_cluster"] = [OSError("scancel timed out"), None]
    manager.stop(cluster, "requested by alice")
    await settled(manager, lambda: cluster.status.done, "the stop")
    assert cluster.status == JobStatus.STOPPED
    assert manager.backend.count("stop_cluster") == 2
    # One that never works is given up after the limit, not retried forever.
    other = await running_cluster(manager)
    manager.backend.fail["stop_cluster"] = [OSError("scancel timed out")]
    manager.stop(other)
    await settled(manager, lambda: other.status.done, "giving up")
    assert manager.backend.count("stop_cluster") == 2 + 3


async def test_cluster_start_timeout_quotes_the_scheduler_log(make_manager, clock):
    manager = await make_manager(cluster_start_timeout=60)
    manager.backend.log_text = "\nImportError: no module named numpy\n\nTraceback end\n"
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the scheduler start")
    clock.advance(59)
    await manager.check_timeouts()
    assert cluster.active
    clock.advance(2)
    await manager.check_timeouts()
    assert cluster.target == JobStatus.FAILED
    assert cluster.reason == (
        "Cluster did not start within 60 s; scheduler log: "
        "ImportError: no module named numpy | Traceback end"
    )
    await settled(manager, lambda: cluster.status.done, "the stop")


async def test_cluster_heartbeat_timeout(make_manager, clock):
    manager = await make_manager(cluster_heartbeat_timeout=30)
    cluster = await running_cluster(manager)
    clock.advance(29)
    await manager.heartbeat(cluster, heartbeat())  # resets the timer
    clock.advance(29)
    await manager.check_timeouts()
    assert cluster.active
    clock.advance(2)
    await manager.check_timeouts()
    assert cluster.reason == "No heartbeat from the scheduler for 30 s"
    await settled(manager, lambda: cluster.status == JobStatus.FAILED, "the failure")


async def test_worker_start_timeout_and_failure_limit(make_manager, clock):
    manager = await make_manager(
        worker_start_timeout=60, worker_start_failure_limit=3, cluster_heartbeat_timeout=3600
    )
    cluster = await running_cluster(manager)
    await manager.scale(cluster, 2)
    await settled(manager, lambda: manager.backend.count("start_worker") == 2, "two workers")
    clock.advance(61)
    await manager.check_timeouts()
    failed = [w for w in cluster.workers.values() if w.target == JobStatus.FAILED]
    assert len(failed) == 2 and failed[0].reason == "Worker did not start within 60 s"
    assert cluster.active  # two failures in a row, the limit is three
    # Replacements are started for the target count; one joins, which resets the count.
    await settled(manager, lambda: manager.backend.count("start_worker") == 4, "replacements")
    joining = [w for w in cluster.workers.values() if not w.target.done]
    await manager.heartbeat(cluster, heartbeat(workers=[joining[0].name]))
    clock.advance(61)
    await manager.check_timeouts()
    assert cluster.active  # one failure since the last success
    await settled(manager, lambda: manager.backend.count("start_worker") == 5, "a replacement")
    clock.advance(61)
    await manager.check_timeouts()
    await settled(manager, lambda: manager.backend.count("start_worker") == 6, "a replacement")
    clock.advance(61)
    await manager.check_timeouts()
    assert cluster.target == JobStatus.FAILED
    assert cluster.reason.startswith("3 workers in a row failed to start; last: Worker did not")


async def test_workers_that_cannot_start_fail_the_cluster_at_the_limit(make_manager):
    manager = await make_manager(worker_start_failure_limit=2)
    cluster = await running_cluster(manager)
    manager.backend.fail["start_worker"] = [RuntimeError("no such partition")]
    await manager.scale(cluster, 1)
    await settled(manager, lambda: cluster.target.done, "the failure")
    assert manager.backend.count("start_worker") == 2
    assert cluster.reason == (
        "2 workers in a row failed to start; last: Worker failed to start: no such partition"
    )


async def test_a_worker_the_backend_cannot_start_yet_is_no_failure(make_manager):
    """A full quota (TryLater) keeps the cluster running: not counted, tried again later,
    told once in the events."""
    manager = await make_manager(worker_start_failure_limit=2)
    cluster = await running_cluster(manager)
    full = TryLater("exceeded quota: pods=10", retry_after=0.05)
    manager.backend.fail["start_worker"] = [full, full, full, None]
    await manager.scale(cluster, 1)
    await settled(manager, lambda: manager.backend.count("start_worker") == 4, "retries")
    assert cluster.active and cluster.count == 1
    started = [w for w in cluster.workers.values() if w.status == JobStatus.SUBMITTED]
    assert len(started) == 1
    kinds = [e.kind for e in manager.events.of(cluster.name)]
    assert kinds.count("worker_deferred") == 1 and "worker_failed" not in kinds


async def test_a_dead_worker_is_replaced(make_manager, clock):
    manager = await make_manager()
    cluster = await running_cluster(manager)
    await manager.scale(cluster, 1)
    await settled(manager, lambda: manager.backend.count("start_worker") == 1, "a worker")
    (worker,) = cluster.workers.values()
    await manager.heartbeat(cluster, heartbeat(workers=[worker.name]))
    manager.backend.dead_workers.add(worker.name)
    await manager.check_timeouts()
    assert worker.target == JobStatus.FAILED and worker.reason == "exited with code 1"
    await settled(manager, lambda: manager.backend.count("start_worker") == 2, "a replacement")
    assert cluster.active


async def test_addresses_the_backend_does_not_confirm_fail_the_cluster(make_manager):
    manager = await make_manager()

    async def refuse(cluster, ips, port):
        return "not a port of the scheduler's process"

    manager.backend.confirm_address = refuse
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the scheduler start")
    with pytest.raises(Forbidden):
        await manager.heartbeat(cluster, heartbeat())
    assert cluster.target == JobStatus.FAILED
    assert "not a port of the scheduler's process" in cluster.reason
    assert manager.routes.snapshot()["routes"] == {}


async def test_a_scheduler_without_tls_is_refused(make_manager):
    manager = await make_manager()
    cluster = await manager.create(ALICE, {})
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the scheduler start")
    with pytest.raises(Forbidden):
        await manager.heartbeat(cluster, heartbeat(scheduler_address="tcp://127.0.0.1:40000"))
    assert cluster.reason == "Scheduler reported an address without TLS"
    assert cluster.target == JobStatus.FAILED and not cluster.scheduler_address


async def test_an_empty_status_filter_lists_nothing(make_manager):
    manager = await make_manager()
    await manager.create(ALICE, {})
    assert manager.listing(ALICE, set()) == b"{}"


# --- the worker count ---------------------------------------------------------------------


async def test_scale_owns_the_count_and_heartbeats_follow_it(make_manager):
    manager = await make_manager()
    cluster = await running_cluster(manager)
    assert await manager.scale(cluster, 3) == (True, None)
    assert manager.sent[-1] == (cluster.name, {"op": "scale", "count": 3})
    # A heartbeat from before the scale (or a scheduler that lost it) does not undo it;
    # the reply brings the scheduler back to the gateway's count.
    reply = await manager.heartbeat(cluster, heartbeat(count=1))
    assert cluster.count == 3 and reply["count"] == 3
    assert reply["max_workers"] == 100  # ClusterConfig.cluster_max_workers


async def test_an_adaptive_scheduler_moves_the_count_within_its_bounds(make_manager):
    manager = await make_manager()
    cluster = await running_cluster(manager)
    await manager.adapt(cluster, 1, 4)
    assert manager.sent[-1][1] == {"op": "adapt", "minimum": 1, "maximum": 4, "active": True}
    assert (await manager.heartbeat(cluster, heartbeat(count=3)))["count"] == 3
    assert cluster.count == 3
    assert (await manager.heartbeat(cluster, heartbeat(count=9)))["count"] == 4
    assert cluster.count == 4
    await manager.scale(cluster, 2)  # scale ends adaptive mode
    assert cluster.adaptive is None
    assert (await manager.heartbeat(cluster, heartbeat(count=4)))["count"] == 2


async def test_a_quota_clamped_count_is_sent_back_once(make_manager):
    # 3 cores: the scheduler's 1 and two 1-core workers.
    manager = await make_manager(quotas=Quotas(max_cores=3))
    cluster = await running_cluster(manager)
    await manager.adapt(cluster, 0, 10)
    assert cluster.adaptive == {"minimum": 0, "maximum": 2}  # the ceiling applies already
    reply = await manager.heartbeat(cluster, heartbeat(count=5))
    assert reply == {"count": 2, "max_workers": 2} and cluster.count == 2
    # The scheduler now reports what it was told: nothing left to clamp.
    assert await manager.heartbeat(cluster, heartbeat(count=2)) == reply


async def test_scale_is_clamped_by_the_cluster_limit_and_the_quota(make_manager):
    manager = await make_manager(
        quotas=Quotas(max_memory=7 * GB),
        backend_config={"ClusterConfig": {"cluster_max_workers": 5}},
    )
    cluster = await running_cluster(manager)  # 2 G scheduler, 2 G workers
    ok, msg = await manager.scale(cluster, 8)
    assert not ok and cluster.count == 2
    assert msg == (
        "Scale request of 5 workers would exceed your per-user quota (7.0 GiB). "
        "Scaling to 2 instead."
    )
    with pytest.raises(InvalidOptions):
        await manager.scale(cluster, -1)
    with pytest.raises(InvalidOptions):
        await manager.scale(cluster, True)
    assert cluster.count == 2


async def test_scale_of_an_unreachable_scheduler_changes_nothing(make_manager):
    manager = await make_manager()
    cluster = await running_cluster(manager)

    async def unreachable(cluster, msg):
        raise Conflict(f"cluster {cluster.name} is not responding")

    manager._send_to_scheduler = unreachable
    with pytest.raises(Conflict):
        await manager.scale(cluster, 4)
    assert cluster.count == 0 and not cluster.workers


# --- quotas -------------------------------------------------------------------------------


async def test_max_clusters_per_user_counts_active_clusters_only(make_manager):
    manager = await make_manager(quotas=Quotas(max_clusters=2))
    first = await manager.create(ALICE, {})
    await manager.create(ALICE, {})
    with pytest.raises(Conflict, match="already has 2 running clusters; the limit is 2"):
        await manager.create(ALICE, {})
    await manager.create(User("bob"), {})  # quotas are per user
    manager.stop(first)
    await manager.create(ALICE, {})  # a stopping cluster no longer counts


async def test_concurrent_creates_cannot_overrun_the_quota(make_manager):
    manager = await make_manager(quotas=Quotas(max_clusters=2))
    results = await asyncio.gather(
        *(manager.create(ALICE, {}) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


async def test_core_and_memory_quotas_span_the_users_clusters(make_manager):
    manager = await make_manager(quotas=Quotas(max_cores=4, max_memory=20 * GB))
    first = await running_cluster(manager)
    await manager.scale(first, 2)  # 1 + 2 cores
    second = await running_cluster(manager)  # its scheduler takes the fourth core
    with pytest.raises(Conflict, match="using 4 of a 4-core quota"):
        await manager.create(ALICE, {})
    ok, msg = await manager.scale(second, 1)
    assert not ok and second.count == 0 and "(4 cores, 20.0 GiB)" in msg
    await manager.scale(first, 0)  # frees two cores for the other cluster
    assert await manager.scale(second, 2) == (True, None)


async def test_memory_quota_refuses_a_scheduler_that_does_not_fit(make_manager):
    manager = await make_manager(quotas=Quotas(max_memory=3 * GB))
    await manager.create(ALICE, {})  # 2 G scheduler
    with pytest.raises(Conflict, match="needs 2.0 GiB for its scheduler but user alice is using"):
        await manager.create(ALICE, {})


# --- sharing ------------------------------------------------------------------------------


async def test_sharing_option_adds_the_shared_groups_field(make_manager):
    manager = await make_manager(sharing_option=True)
    spec = (await manager.cluster_options(ALICE)).spec()
    assert [f["field"] for f in spec] == ["shared_groups"]
    cluster = await running_cluster(manager, options={"shared_groups": " team, lab ,team"})
    assert cluster.shared_groups == ["lab", "team"]
    member, stranger = User("bob", frozenset({"team"})), User("eve", frozenset({"x"}))
    assert cluster.name in json.loads(manager.listing(member, None))
    assert cluster.name not in json.loads(manager.listing(stranger, None))
    manager.share(cluster, [])
    assert cluster.name not in json.loads(manager.listing(member, None))  # cache follows
    with pytest.raises(InvalidOptions):
        manager.share(cluster, 5)


async def test_sharing_option_off_removes_the_field(make_manager):
    manager = await make_manager(sharing_option=False)
    assert (await manager.cluster_options(ALICE)).spec() == []
    with pytest.raises(InvalidOptions, match="shared_groups"):
        await manager.create(ALICE, {"shared_groups": "team"})


async def test_the_listing_follows_every_change_the_manager_makes(make_manager):
    manager = await make_manager()
    cluster = await manager.create(ALICE, {})

    def status():
        every = set(ClusterStatus)
        return json.loads(manager.listing(ALICE, every))[cluster.name]["status"]

    assert status() == "PENDING"
    await settled(manager, lambda: cluster.status == JobStatus.SUBMITTED, "the scheduler")
    await manager.heartbeat(cluster, heartbeat())
    assert status() == "RUNNING"
    manager.stop(cluster)
    assert status() == "STOPPING"
    assert json.loads(manager.listing(ALICE, None)) == {}  # only active ones by default
    await settled(manager, lambda: cluster.status.done, "the stop")
    assert status() == "STOPPED"
    listed = json.loads(manager.listing(ALICE, {ClusterStatus.STOPPED}))
    assert listed[cluster.name]["stop_time"] == int(manager.clock() * 1000)
