"""The Hub server watch and the event history, against the in-memory manager.

The real Hub proves the whole path (tests/test_hub_lifecycle.py); here the policy:
grace periods, owners never seen with a server, deleted users, the events recorded.
"""

from __future__ import annotations

import logging

from fakes import ALICE, heartbeat, running_cluster, settled
from jupyterhub_dask_gateway.hub_watch import ServerWatch
from jupyterhub_dask_gateway.models import JobStatus, User


class FakeHub(ServerWatch):
    """The watch with the Hub's answers set by the test."""

    def __init__(self, manager, clock, grace=60):
        super().__init__(
            manager, "http://hub/api", "t", grace, 1, logging.getLogger("test"), clock=clock
        )
        self.active: set[str] = set()
        self.users: set[str] = {"alice", "bob"}
        self.existence_checks = 0

    async def active_users(self):
        return set(self.active)

    async def user_exists(self, name):
        self.existence_checks += 1
        return name in self.users


def kinds(manager, cluster):
    return [e.kind for e in manager.events.of(cluster.name)]


async def test_clusters_stop_a_grace_period_after_the_last_server(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock, grace=60)
    alice = await running_cluster(manager)
    bob = await running_cluster(manager, User("bob"))
    hub.active = {"alice", "bob"}
    await hub.poll_once()
    hub.active = {"bob"}  # alice's server was culled
    await hub.poll_once()
    clock.advance(59)
    await hub.poll_once()
    assert alice.active
    hub.active = {"alice", "bob"}  # ... and started again in time: the timer resets
    await hub.poll_once()
    hub.active = {"bob"}
    await hub.poll_once()
    clock.advance(59)
    await hub.poll_once()
    assert alice.active
    clock.advance(2)
    await hub.poll_once()
    assert alice.target == JobStatus.STOPPED and bob.active
    assert "last server of its owner alice stopped" in alice.reason
    await settled(manager, lambda: alice.status.done, "the stop")
    assert kinds(manager, alice)[-2:] == ["stop_requested", "stopped"]
    # Each time alice was first seen without one, and once more access_check_period later.
    assert hub.existence_checks == 3


async def test_owners_never_seen_with_a_server_keep_their_clusters(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock, grace=0)
    cluster = await running_cluster(manager)  # made with an API token, no server
    for _ in range(3):
        await hub.poll_once()
        clock.advance(100)
    assert cluster.active


async def test_a_deleted_users_clusters_stop_at_once(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock, grace=3600)
    cluster = await running_cluster(manager)
    hub.users.discard("alice")
    await hub.poll_once()
    assert cluster.target == JobStatus.STOPPED
    assert cluster.reason == "because its owner alice was deleted from the Hub"


async def test_no_clusters_no_questions(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock)

    async def fail():
        raise AssertionError("asked the Hub with nothing to follow")

    hub.active_users = fail
    await hub.poll_once()


async def test_the_history_of_a_cluster(make_manager, clock):
    manager = await make_manager()
    cluster = await running_cluster(manager)
    await manager.scale(cluster, 1, by="alice")
    await settled(manager, lambda: manager.backend.count("start_worker") == 1, "a worker")
    (worker,) = cluster.workers.values()
    await manager.heartbeat(cluster, heartbeat(workers=[worker.name]))
    manager.backend.dead_workers.add(worker.name)
    await manager.check_timeouts()
    await settled(manager, lambda: manager.backend.count("start_worker") == 2, "a replacement")
    manager.stop(cluster, "requested by alice")
    await settled(manager, lambda: cluster.status.done, "the stop")
    events = manager.events.of(cluster.name)
    assert [e.kind for e in events] == [
        "created",
        "started",
        "scaled",
        "worker_started",
        "worker_running",
        "worker_failed",
        "worker_started",  # the replacement
        "stop_requested",
        "stopped",
    ]
    assert events[2].message == "Scaled to 1 workers by alice"
    failed = next(e for e in events if e.kind == "worker_failed")
    assert failed.worker == worker.name and failed.message == "exited with code 1"
    # The store keeps them for a restarted gateway.
    assert [e.kind for e in manager.store.load_events()[cluster.name]] == [e.kind for e in events]
    assert ALICE.name in events[0].message


def test_access_roles_come_from_the_hubs_config():
    from traitlets.config import Config

    from jupyterhub_dask_gateway.hub_watch import access_roles

    c = Config()
    assert access_roles(c.JupyterHub, "dask-gateway") is None  # not the Hub's config
    c.JupyterHub.load_roles = [{"name": "dask-gateway-service", "scopes": ["list:users"]}]
    c.JupyterHub.extra_user_scopes = {"access:services!service=dask-gateway"}
    assert access_roles(c.JupyterHub, "dask-gateway") is None  # as configure_jupyterhub sets
    # The manual way of letting only some users in: no extra_user_scopes, a group role.
    c.JupyterHub.extra_user_scopes = set()
    c.JupyterHub.load_roles += [{"name": "dask-users", "scopes": ["access:services"]}]
    assert access_roles(c.JupyterHub, "dask-gateway") == {"admin", "dask-users"}
    c.JupyterHub.load_roles += [
        {"name": "user", "scopes": ["self"]},
        {"name": "dask-users", "scopes": ["access:services!service=dask-gateway"]},
        {"name": "all-services", "scopes": ["access:services"]},
        {"name": "other", "scopes": ["access:services!service=other"]},
    ]
    assert access_roles(c.JupyterHub, "dask-gateway") == {"admin", "dask-users", "all-services"}


async def test_a_user_who_loses_access_loses_their_clusters(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock, grace=3600)
    hub.access_roles = {"admin", "dask-users"}
    hub.access_check_period = 60
    models = {
        "alice": {"roles": ["user"], "groups": ["dask"], "admin": False},
        "bob": {"roles": ["user", "dask-users"], "groups": [], "admin": False},
        "carol": {"groups": ["dask"], "admin": False},  # no read:roles:users: unknown
    }
    groups = [{"name": "dask", "roles": ["dask-users"]}]

    async def get(path, **params):
        if path == "/groups":
            return {"items": groups, "_pagination": {"next": None}}
        return models[path.rsplit("/", 1)[1]]

    hub._get = get
    alice, bob = await running_cluster(manager), await running_cluster(manager, User("bob"))
    carol = await running_cluster(manager, User("carol"))
    hub.users.add("carol")
    await hub.poll_once()
    assert alice.active and bob.active and carol.active
    models["alice"]["groups"] = []  # removed from the group that granted access
    await hub.poll_once()
    assert alice.active  # checked again only after access_check_period
    clock.advance(61)
    await hub.poll_once()
    assert alice.target == JobStatus.STOPPED and bob.active and carol.active
    assert alice.reason == "because its owner alice lost access to the gateway"


async def test_an_owner_deleted_later_is_noticed(make_manager, clock):
    manager = await make_manager()
    hub = FakeHub(manager, clock, grace=3600)
    cluster = await running_cluster(manager)  # alice: never seen with a server
    await hub.poll_once()
    hub.users.discard("alice")
    clock.advance(30)
    await hub.poll_once()
    assert cluster.active  # not asked again yet
    clock.advance(31)
    await hub.poll_once()
    assert cluster.reason == "because its owner alice was deleted from the Hub"
