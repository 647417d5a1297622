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
