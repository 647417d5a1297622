"""Status mapping, permissions and the wire model's exact keys."""

from dask_gateway.client import ClusterReport

from jupyterhub_dask_gateway.models import Cluster, ClusterStatus, JobStatus, User, public_status


def test_public_status_mapping():
    S = JobStatus
    assert public_status(S.CREATED, S.RUNNING) == ClusterStatus.PENDING
    assert public_status(S.SUBMITTED, S.RUNNING) == ClusterStatus.PENDING
    assert public_status(S.RUNNING, S.RUNNING) == ClusterStatus.RUNNING
    assert public_status(S.RUNNING, S.STOPPED) == ClusterStatus.STOPPING
    assert public_status(S.SUBMITTED, S.FAILED) == ClusterStatus.STOPPING
    assert public_status(S.STOPPED, S.STOPPED) == ClusterStatus.STOPPED
    assert public_status(S.FAILED, S.FAILED) == ClusterStatus.FAILED


def make(**kw):
    return Cluster(
        name="n", username="alice", token="t", tls_cert="C", tls_key="K", start_time=1, **kw
    )


def test_wire_model_is_accepted_by_the_real_client():
    c = make(status=JobStatus.RUNNING, dashboard_address="http://x")
    report = ClusterReport._from_json("http://pub", "gateway://h:1", c.to_wire())
    assert report.dashboard_link == "http://pub/clusters/n/status"
    assert report.security.tls_key == "K"
    pending = make().to_wire()
    assert pending["tls_key"] is None and pending["dashboard_route"] is None


def test_permissions():
    c = make(shared_groups=["team"])
    assert User("alice").may_manage(c)
    assert User("root", admin=True).may_manage(c)
    member = User("bob", frozenset({"team"}))
    assert member.may_view(c) and not member.may_manage(c)
    assert not User("eve", frozenset({"other"})).may_view(c)


def test_listing_entry_follows_every_listed_field():
    """The cached listing JSON (and the listing generation) change with each field it shows."""
    import json

    c = make()
    entry = c.listing_entry("/p")
    assert json.loads(b"{" + entry + b"}")["n"]["status"] == "PENDING"
    assert c.listing_entry("/p") is entry  # cached
    changes = [
        ("status", JobStatus.RUNNING, lambda m: m["status"] == "RUNNING" and m["tls_key"] == "K"),
        ("dashboard_address", "http://d", lambda m: m["dashboard_route"] == "/p/clusters/n/status"),
        ("target", JobStatus.STOPPED, lambda m: m["status"] == "STOPPING"),
        ("stop_time", 5, lambda m: m["stop_time"] == 5),
    ]
    for field, value, check in changes:
        generation = Cluster.listing_generation
        setattr(c, field, value)
        assert Cluster.listing_generation > generation, field
        assert check(json.loads(b"{" + c.listing_entry("/p") + b"}")["n"]), field
    generation = Cluster.listing_generation
    c.shared_groups = ["team"]  # changes who sees it, not its JSON
    assert Cluster.listing_generation > generation
    generation = Cluster.listing_generation
    c.last_heartbeat = 123.0  # not listed: the cache stays valid
    assert Cluster.listing_generation == generation
