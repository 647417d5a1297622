"""Prometheus metrics (``metrics.py``): scraped with Prometheus' own text parser.

A real standalone gateway, the unmodified client and real clusters move the gauges;
its proxy's counters arrive through the route poll; who may scrape is checked for
every kind of caller. The collector and the proxy's report format also have unit
tests against stand-ins. One real Hub proves the ``read:metrics`` scope.
"""

from __future__ import annotations

import socket
import ssl
from types import SimpleNamespace

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import PASSWORD, wait_for
from jupyterhub_dask_gateway.events import Event
from jupyterhub_dask_gateway.metrics import GatewayMetrics
from jupyterhub_dask_gateway.models import Cluster, JobStatus, User, Worker
from jupyterhub_dask_gateway.proxy.stats import CONNECTION_KINDS, ProxyStats, parse_report

METRICS_TOKEN = "metrics-test-token-0123456789"

HANDLERS = "jupyterhub_dask_gateway.handlers"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: ``(name, labels) -> value``."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels):
    """The sample ``name{labels}``, or None when it is absent."""
    return samples.get((name, frozenset(labels.items())))


# --- unit tests: the collector against a stand-in manager -------------------------------------


def fake_manager(clusters=(), now=1000.0, queue_depth=0):
    return SimpleNamespace(
        clusters={c.name: c for c in clusters},
        queue_depth=queue_depth,
        clock=lambda: now,
        log=SimpleNamespace(warning=lambda *a, **k: None),
    )


def cluster(name, status, target=JobStatus.RUNNING, workers=(), count=0, **kwargs):
    c = Cluster(
        name=name,
        username="alice",
        token="t",
        tls_cert="",
        tls_key="",
        status=status,
        target=target,
        count=count,
        config={
            "scheduler_cores": 1,
            "worker_cores": 2,
            "scheduler_memory": 100,
            "worker_memory": 10,
        },
        **kwargs,
    )
    for i, (w_status, w_target) in enumerate(workers):
        c.workers[f"w{i}"] = Worker(f"w{i}", name, status=w_status, target=w_target)
    return c


def test_gauges_are_computed_from_the_managers_state():
    running = cluster(
        "a",
        JobStatus.RUNNING,
        count=2,
        last_heartbeat=990.0,
        workers=[
            (JobStatus.RUNNING, JobStatus.RUNNING),
            (JobStatus.SUBMITTED, JobStatus.RUNNING),
            (JobStatus.RUNNING, JobStatus.STOPPED),
            (JobStatus.STOPPED, JobStatus.STOPPED),
        ],
    )
    pending = cluster("b", JobStatus.SUBMITTED)
    stopping = cluster("c", JobStatus.RUNNING, target=JobStatus.STOPPED, last_heartbeat=0.0)
    stopped = cluster("d", JobStatus.STOPPED, target=JobStatus.STOPPED, count=5)
    failed = cluster("e", JobStatus.FAILED, target=JobStatus.FAILED)
    manager = fake_manager([running, pending, stopping, stopped, failed], queue_depth=3)
    samples = parse(GatewayMetrics(manager, "local").exposition().decode())

    clusters = {
        s: value(samples, "dask_gateway_clusters", status=s, backend="local")
        for s in ("pending", "running", "stopping", "stopped", "failed")
    }
    assert clusters == {"pending": 1, "running": 1, "stopping": 1, "stopped": 1, "failed": 1}
    workers = {
        s: value(samples, "dask_gateway_workers", status=s, backend="local")
        for s in ("pending", "running", "stopping")
    }
    assert workers == {"pending": 1, "running": 1, "stopping": 1}
    # As the quotas count: a is its scheduler and max(count 2, 2 live workers) workers;
    # b and c their schedulers; d and e have stopped.
    assert value(samples, "dask_gateway_cores_in_use") == 1 + 2 * 2 + 1 + 1
    assert value(samples, "dask_gateway_memory_in_use_bytes") == 100 + 2 * 10 + 100 + 100
    assert value(samples, "dask_gateway_reconcile_queue_depth") == 3
    # Only running clusters count: the stopping one's silence is expected.
    assert value(samples, "dask_gateway_heartbeat_lag_seconds") == 10
    # Both outcomes exist from the start, as JupyterHub's enum labels do.
    for outcome in ("running", "failed"):
        count = value(
            samples,
            "dask_gateway_cluster_start_duration_seconds_count",
            backend="local",
            outcome=outcome,
        )
        assert count == 0
    # No proxy report yet: no proxy series rather than zeros.
    assert not any(name.startswith("dask_gateway_proxy_") for name, _ in samples)
    # Process metrics, as JupyterHub's registry has.
    assert value(samples, "process_open_fds") is not None
    assert all(v >= 0 for (name, _), v in samples.items() if name.startswith("dask_gateway_"))


def test_two_gateways_in_one_process_have_their_own_registries():
    first = GatewayMetrics(fake_manager([cluster("a", JobStatus.RUNNING)]), "local")
    second = GatewayMetrics(fake_manager(), "slurm")
    one, two = parse(first.exposition().decode()), parse(second.exposition().decode())
    assert value(one, "dask_gateway_clusters", status="running", backend="local") == 1
    assert value(two, "dask_gateway_clusters", status="running", backend="slurm") == 0
    assert value(two, "dask_gateway_clusters", status="running", backend="local") is None


def test_start_durations_come_from_the_event_log():
    starting = cluster("a", JobStatus.SUBMITTED, start_time=10_000)
    never_ran = cluster("b", JobStatus.CREATED, start_time=10_000)
    ran = cluster("c", JobStatus.RUNNING, start_time=10_000)
    metrics = GatewayMetrics(fake_manager([starting, never_ran, ran]), "local")
    metrics.on_event("a", Event(12_500, "started", "Scheduler running"))
    metrics.on_event("b", Event(70_000, "failed", "Cluster did not start within 60 s"))
    metrics.on_event("c", Event(99_000, "failed", "No heartbeat"))  # it ran: not a start
    metrics.on_event("a", Event(13_000, "scaled", "Scaled to 2 workers"))
    metrics.on_event("gone", Event(13_000, "started", "a cluster already pruned"))
    samples = parse(metrics.exposition().decode())
    name = "dask_gateway_cluster_start_duration_seconds"
    assert value(samples, f"{name}_count", backend="local", outcome="running") == 1
    assert value(samples, f"{name}_sum", backend="local", outcome="running") == 2.5
    assert value(samples, f"{name}_bucket", backend="local", outcome="running", le="2.5") == 1
    assert value(samples, f"{name}_count", backend="local", outcome="failed") == 1
    assert value(samples, f"{name}_sum", backend="local", outcome="failed") == 60


def test_request_labels_stay_bounded():
    metrics = GatewayMetrics(fake_manager(), "local")

    class ClustersHandler:
        SUPPORTED_METHODS = ("GET", "POST")

        def __init__(self, method, status):
            self.request = SimpleNamespace(method=method, request_time=lambda: 0.01)
            self._status = status

        def get_status(self):
            return self._status

    for method in ("GET", "GET", "BREW", "X" * 100):
        metrics.observe_request(ClustersHandler(method, 200))
    samples = parse(metrics.exposition().decode())
    handler = f"{__name__}.ClustersHandler"
    name = "dask_gateway_request_duration_seconds_count"
    assert value(samples, name, method="GET", handler=handler, code="200") == 2
    assert value(samples, name, method="other", handler=handler, code="200") == 2


def test_proxy_report_round_trip_and_validation():
    stats = ProxyStats(clock=lambda: 1767225600.5)
    stats.count("scheduler")
    stats.count("refused")
    stats.count("refused")
    stats.bytes[ProxyStats.IN] += 100
    stats.bytes[ProxyStats.OUT] += 2**40
    report = parse_report(stats.encode(open_connections=4))
    assert report["started"] == 1767225600500
    assert report["scheduler"] == 1 and report["refused"] == 2 and report["http"] == 0
    assert (report["in"], report["out"], report["open"]) == (100, 2**40, 4)
    # A newer proxy's extra keys are ignored; missing ones are 0.
    assert parse_report("started=1,scheduler=2,future_kind=9")["scheduler"] == 2
    for bad in (
        None,
        "",
        "scheduler",
        "scheduler=-1",
        "scheduler=1.5",
        "scheduler=١",  # a digit, but not an ASCII one
        "scheduler=99999999999999999999",
        f"scheduler={2**63}",
        "x=1," * 300,
    ):
        assert parse_report(bad) is None, bad

    now = [0.0]
    metrics = GatewayMetrics(
        fake_manager(), "local", proxy_report_max_age=60, monotonic=lambda: now[0]
    )
    metrics.proxy_reported(stats.encode(4))
    metrics.proxy_reported("garbage")  # ignored: the last good report stands
    samples = parse(metrics.exposition().decode())
    assert value(samples, "dask_gateway_proxy_connections_total", kind="refused") == 2
    assert value(samples, "dask_gateway_proxy_connections_created", kind="refused") == 1767225600.5
    assert value(samples, "dask_gateway_proxy_bytes_total", direction="out") == 2**40
    assert value(samples, "dask_gateway_proxy_open_connections") == 4
    kinds = {
        dict(labels)["kind"]
        for name, labels in samples
        if name == "dask_gateway_proxy_connections_total"
    }
    assert kinds == set(CONNECTION_KINDS)
    now[0] = 61.0  # a proxy that stopped polling is not shown as idle forever
    samples = parse(metrics.exposition().decode())
    assert value(samples, "dask_gateway_proxy_connections_total", kind="refused") is None


def test_who_may_read_metrics():
    from jupyterhub_dask_gateway.metrics import may_read_metrics

    assert may_read_metrics(User("root", admin=True))
    assert may_read_metrics(User("service:prometheus", scopes=frozenset({"read:metrics"})))
    assert not may_read_metrics(User("alice", scopes=frozenset({"access:services"})))


# --- a real gateway ---------------------------------------------------------------------------

GATEWAY_CONFIG = f"""
c.DaskGateway.metrics_token = {METRICS_TOKEN!r}
# The proxy reports with each route poll: poll often, so its counters are fresh.
c.DaskGateway.routes_poll_timeout = 0.5
# API connections on the public port are spliced (their bytes counted); schedulers'
# are handed off (LocalBackend.socket_handoff).
c.DaskGateway.socket_handoff = False
c.BasicAuthenticator.admin_users = {{"dave"}}
c.BasicAuthenticator.passwords = {{"dave": {PASSWORD!r}}}
"""


def scrape(gw, **kwargs) -> requests.Response:
    kwargs.setdefault("headers", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    return requests.get(f"{gw.api_address}/metrics", timeout=30, **kwargs)


def samples_of(gw):
    r = scrape(gw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return parse(r.text)


def clusters_gauge(gw, status):
    return value(samples_of(gw), "dask_gateway_clusters", status=status, backend="local")


def workers_gauge(gw, status):
    return value(samples_of(gw), "dask_gateway_workers", status=status, backend="local")


def proxy_counter(gw, kind):
    return value(samples_of(gw), "dask_gateway_proxy_connections_total", kind=kind) or 0


def test_who_may_scrape(make_gateway):
    gw = make_gateway(GATEWAY_CONFIG)
    r = scrape(gw, headers={})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = scrape(gw, headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code == 401
    r = scrape(gw, headers={}, auth=("alice", PASSWORD))
    assert r.status_code == 403
    r = scrape(gw, headers={}, auth=("dave", PASSWORD))
    assert r.status_code == 200 and "dask_gateway_clusters" in r.text
    assert scrape(gw).status_code == 200
    # Through the public port as well (the proxy relays the API).
    r = requests.get(f"{gw.address}/metrics", auth=("alice", PASSWORD), timeout=30)
    assert r.status_code == 403


def test_metrics_open_without_auth_when_configured(make_gateway):
    gw = make_gateway("c.DaskGateway.metrics_require_auth = False\n")
    r = scrape(gw, headers={})
    assert r.status_code == 200
    assert value(parse(r.text), "dask_gateway_reconcile_queue_depth") is not None


def test_gauges_follow_a_clusters_life(make_gateway):
    gw = make_gateway(GATEWAY_CONFIG)
    samples = samples_of(gw)
    assert value(samples, "dask_gateway_clusters", status="running", backend="local") == 0
    assert value(samples, "dask_gateway_reconcile_queue_depth") == 0
    assert value(samples, "dask_gateway_cores_in_use") == 0
    # The proxy's first report comes with its first route poll.
    wait_for(
        lambda: value(samples_of(gw), "dask_gateway_proxy_open_connections") is not None,
        20,
        what="the proxy's first report",
    )
    http_before = proxy_counter(gw, "http")
    bytes_before = value(samples_of(gw), "dask_gateway_proxy_bytes_total", direction="in")

    with gw.gateway() as gateway:
        with gateway.new_cluster() as cl:
            samples = samples_of(gw)
            assert value(samples, "dask_gateway_clusters", status="running", backend="local") == 1
            name = "dask_gateway_cluster_start_duration_seconds_count"
            assert value(samples, name, backend="local", outcome="running") == 1
            assert value(samples, name, backend="local", outcome="failed") == 0
            assert 0 <= value(samples, "dask_gateway_heartbeat_lag_seconds") < 30
            created = value(
                samples,
                "dask_gateway_request_duration_seconds_count",
                method="POST",
                handler=f"{HANDLERS}.ClustersHandler",
                code="201",
            )
            assert created == 1

            cl.scale(2)
            wait_for(lambda: workers_gauge(gw, "running") == 2, 60, what="2 running workers")
            samples = samples_of(gw)
            assert value(samples, "dask_gateway_cores_in_use") == 3  # scheduler + 2 workers
            assert value(samples, "dask_gateway_memory_in_use_bytes") == 3 * 512 * 2**20

            # Client traffic through the proxy: the scheduler's connection is handed off
            # (or spliced, before the scheduler's socket is in the routes), the API's is
            # spliced (bytes counted).
            def to_schedulers():
                return proxy_counter(gw, "scheduler_handoff") + proxy_counter(gw, "scheduler")

            before = to_schedulers()
            with cl.get_client(set_as_default=False) as client:
                assert client.submit(sum, [1, 2]).result(timeout=30) == 3
            wait_for(
                lambda: to_schedulers() > before,
                20,
                what="the proxy to report the scheduler connection",
            )
            assert proxy_counter(gw, "http") > http_before
            samples = samples_of(gw)
            assert value(samples, "dask_gateway_proxy_bytes_total", direction="in") > bytes_before
            assert value(samples, "dask_gateway_proxy_bytes_total", direction="out") > 0

            # An unknown cluster's TLS is refused.
            refused = proxy_counter(gw, "refused")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as raw:
                with pytest.raises((ssl.SSLError, OSError)):
                    context.wrap_socket(raw, server_hostname="daskgateway-" + "0" * 32)
            wait_for(lambda: proxy_counter(gw, "refused") > refused, 20, what="a refusal")

            # The scheduler's own metrics, through the dashboard proxy, for its owner.
            r = requests.get(
                f"{gw.address}/clusters/{cl.name}/metrics", auth=("alice", PASSWORD), timeout=30
            )
            assert r.status_code == 200, r.text
            families = {f.name for f in text_string_to_metric_families(r.text)}
            assert any(f.startswith("dask_scheduler_") for f in families), sorted(families)[:20]
            r = requests.get(
                f"{gw.address}/clusters/{cl.name}/metrics", auth=("bob", PASSWORD), timeout=30
            )
            assert r.status_code == 403

        wait_for(lambda: clusters_gauge(gw, "stopped") == 1, 60, what="the cluster to stop")
        samples = samples_of(gw)
        assert value(samples, "dask_gateway_clusters", status="running", backend="local") == 0
        assert value(samples, "dask_gateway_workers", status="running", backend="local") == 0
        assert value(samples, "dask_gateway_cores_in_use") == 0


# --- under a real Hub -------------------------------------------------------------------------

PROMETHEUS_TOKEN = "prometheus-service-token-0123456789abcdef"


@pytest.mark.timeout(180)
def test_read_metrics_scope_under_the_hub(make_hub):
    hub = make_hub(
        hub_config=f"""
        c.JupyterHub.services += [{{"name": "prometheus", "api_token": {PROMETHEUS_TOKEN!r}}}]
        c.JupyterHub.load_roles += [
            {{
                "name": "prometheus",
                "services": ["prometheus"],
                "scopes": ["read:metrics", "access:services!service=dask-gateway"],
            }},
        ]
        """
    )
    url = f"{hub.gateway_url}/metrics"
    r = requests.get(url, timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "jupyterhub"
    r = requests.get(url, headers={"Authorization": f"Bearer {PROMETHEUS_TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    samples = parse(r.text)
    assert value(samples, "dask_gateway_clusters", status="running", backend="local") == 0
    # A user's token reaches the service but lacks the scope.
    alice = hub.new_token("alice")["token"]
    r = requests.get(url, headers={"Authorization": f"token {alice}"}, timeout=30)
    assert r.status_code == 403
