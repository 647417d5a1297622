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
    fields = {"name": "n", "username": "alice", "token": "t", "tls_cert": "C", "tls_key": "K"}
    return Cluster(start_time=1, **{**fields, **kw})


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


def test_listing_cache_reuses_answers_until_a_cluster_changes():
    import json

    from jupyterhub_dask_gateway.listing import ListingCache

    cache = ListingCache()
    c, other = make(), make(name="m", username="bob", shared_groups=["team"])
    alice, member = User("alice"), User("carol", frozenset({"team"}))
    body = cache.answer([c, other], alice, None, "/p")
    assert json.loads(body)["n"]["status"] == "PENDING" and "m" not in json.loads(body)
    assert cache.answer([c, other], alice, None, "/p") is body  # reused
    assert set(json.loads(cache.answer([c, other], member, None, "/p"))) == {"m"}
    c.status, c.dashboard_address = JobStatus.RUNNING, "http://d"
    assert cache.answer([c, other], alice, None, "/p") is body  # nobody said it changed
    cache.changed(c)
    model = json.loads(cache.answer([c, other], alice, None, "/p"))["n"]
    assert model["status"] == "RUNNING" and model["tls_key"] == "K"
    assert model["dashboard_route"] == "/p/clusters/n/status"
    # A status filter and a prefix are answers of their own.
    assert json.loads(cache.answer([c], alice, {ClusterStatus.STOPPED}, "/p")) == {}
    assert json.loads(cache.answer([c], alice, None, ""))["n"]["dashboard_route"].startswith("/c")


def test_admins_list_only_their_own_unless_they_ask_for_all():
    from jupyterhub_dask_gateway.listing import listed

    c = make()
    admin = User("root", admin=True)
    assert admin.may_view(c) and not listed(c, admin, None)
    assert listed(c, admin, None, everyone=True)
