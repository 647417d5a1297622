"""The unmodified dask-gateway client against a standalone gateway started from its CLI."""

import warnings

import dask.array as da
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dask_gateway import GatewayClusterError, GatewayWarning

from helpers import assert_invisible, processes_under, wait_for

OPTIONS = """
from jupyterhub_dask_gateway.options import Options, Integer, Float, Select, String, Bool, Mapping

def handler(options, user):
    return {
        "worker_cores": options.worker_cores,
        "worker_memory": int(options.worker_memory_gb * 2**30),
        "environment": {"TEAM": options.team, **options.env},
    }

c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
    Float("worker_memory_gb", 0.5, min=0.25, max=1, label="Worker memory (GiB)"),
    Select("team", ["data", "ml"], label="Team"),
    String("note", "", label="Note"),
    Bool("debug", False, label="Debug"),
    Mapping("env", {}, label="Environment"),
    handler=handler,
)
c.ClusterConfig.cluster_max_workers = 3
c.DaskGateway.max_clusters_per_user = 2
"""


@pytest.fixture
def gw(make_gateway):
    return make_gateway(OPTIONS)


def test_full_client_workflow(gw):
    with gw.gateway() as gateway:
        opts = gateway.cluster_options()
        assert set(opts) == {
            "worker_cores",
            "worker_memory_gb",
            "team",
            "note",
            "debug",
            "env",
            "shared_groups",
        }
        opts.worker_cores = 2
        opts.team = "ml"
        with gateway.new_cluster(opts) as cluster:
            assert cluster.status == "running"
            assert "BEGIN CERTIFICATE" in cluster.security.tls_cert
            key = serialization.load_pem_private_key(cluster.security.tls_key.encode(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)  # tls.py: the default
            # Local schedulers take client sockets from the proxy (proxy/handoff.py).
            handoff_route = f"Route for cluster '{cluster.name}' -> 127.0.0.1:"
            proxy_log = gw.directory / "state" / "proxy.log"
            wait_for(
                lambda: any(
                    handoff_route in line and "(socket hand-off)" in line
                    for line in proxy_log.read_text().splitlines()
                ),
                timeout=20,
                what="the proxy's hand-off route",
            )
            cluster.scale(2)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(2, timeout=60)

                # So the scheduler's end of our comm faces this client's own socket,
                # not an outbound socket of the proxy.
                def client_peer_ports(dask_scheduler):
                    return [
                        bs.comm.peer_address.rsplit(":", 1)[1]
                        for bs in dask_scheduler.client_comms.values()
                    ]

                our_port = client.scheduler_comm.comm.local_address.rsplit(":", 1)[1]
                assert our_port in client.run_on_scheduler(client_peer_ports)
                x = da.ones((2000, 2000), chunks=(500, 500))
                assert client.compute(x.sum()).result() == 4_000_000
                futures = client.map(lambda i: i + 1, range(1000))
                assert sum(client.gather(futures)) == sum(range(1, 1001))
                del futures
                info = client.scheduler_info()
                assert {w["nthreads"] for w in info["workers"].values()} == {2}

                names = [c.name for c in gateway.list_clusters()]
                assert cluster.name in names
                # A second Gateway object connects to the same cluster by name.
                with gw.gateway() as other:
                    same = other.connect(cluster.name)
                    with same.get_client(set_as_default=False) as client2:
                        assert client2.submit(lambda: 6 * 7).result() == 42

                def n_workers():
                    return len(client.scheduler_info()["workers"])

                cluster.adapt(minimum=1, maximum=3)
                wait_for(
                    lambda: n_workers() == 1, timeout=60, what="adaptive scale-down to the minimum"
                )

                # A scale above the limit warns and clamps.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    cluster.scale(5)
                msgs = [str(w.message) for w in caught if issubclass(w.category, GatewayWarning)]
                assert msgs and "exceed resource limit of 3 workers" in msgs[0]
                wait_for(lambda: n_workers() == 3, timeout=60, what="3 workers")
        # Leaving the context manager shut the cluster down.
        report = gateway.get_cluster(cluster.name)
        assert report.status.name in ("STOPPING", "STOPPED")
        wait_for(lambda: gateway.get_cluster(cluster.name).status.name == "STOPPED", 30)
        wait_for(
            lambda: not processes_under(f"{gw.state_dir}/clusters/{cluster.name}"),
            30,
            what="every process of the cluster to exit",
        )


def test_reference_key_type_works_end_to_end(make_gateway):
    """``tls_key_type = "rsa-2048"`` (the reference server's keys): schedulers, workers and
    the client's ``gateway://`` connection all run on them."""
    gw = make_gateway('c.DaskGateway.tls_key_type = "rsa-2048"\n')
    with gw.gateway() as gateway, gateway.new_cluster() as cluster:
        key = serialization.load_pem_private_key(cluster.security.tls_key.encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 6 * 7).result() == 42


def test_errors_and_isolation(gw):
    with gw.gateway("alice") as alice, gw.gateway("bob") as bob:
        # new_cluster() raises the same ValueError, but the GatewayCluster left half-built
        # holds a Gateway whose __del__ deadlocks if the garbage collector runs it on the
        # client's event-loop thread (a dask-gateway client bug), so tests use submit().
        with pytest.raises(ValueError, match="worker_cores must be <= 2"):
            alice.submit(worker_cores=10)
        with pytest.raises(ValueError, match="Unknown fields"):
            alice.submit(bogus=1)
        with pytest.raises(ValueError, match="not found"):
            alice.connect("0123456789abcdef0123456789abcdef")

        c1 = alice.new_cluster()
        c2 = alice.new_cluster()
        try:
            assert {c.name for c in alice.list_clusters()} == {c1.name, c2.name}
            # Quota: two clusters per user.
            with pytest.raises(GatewayClusterError, match="limit is 2"):
                alice.new_cluster()
            # Bob sees nothing of alice's, and cannot touch them.
            assert_invisible(bob, c1.name, 2)
            assert alice.get_cluster(c1.name).status.name == "RUNNING"
        finally:
            c1.shutdown()
            c2.shutdown()


def test_start_failure_reason_reaches_the_client(make_gateway):
    """A scheduler that cannot start: the client's error says why, not just 'see logs'."""
    gw = make_gateway('c.ClusterConfig.python = "/nonexistent/python3"\n')
    with gw.gateway() as gateway:
        name = gateway.submit()
        with pytest.raises(GatewayClusterError, match="failed to start: Scheduler failed"):
            gateway.connect(name)
        assert gateway.get_cluster(name).status.name == "FAILED"


def test_idle_timeout_stops_an_unused_cluster(make_gateway):
    """``ClusterConfig.idle_timeout``: the scheduler stops itself through the gateway."""
    gw = make_gateway("c.ClusterConfig.idle_timeout = 2\n")
    with gw.gateway() as gateway:
        name = gateway.submit()
        assert gateway.connect(name).status == "running"
        wait_for(
            lambda: gateway.get_cluster(name).status.name == "STOPPED",
            timeout=60,
            what="the idle cluster to stop itself",
        )
        details = gw.api_json(f"cluster-details/{name}")
        assert details["reason"] == "idle timeout"


def test_adaptive_scaling_stays_under_a_quota_that_shrinks(make_gateway):
    """The heartbeat's reply carries the ceiling: when the owner's other cluster takes
    quota, an adaptive cluster under load grows only to what is left."""
    gw = make_gateway("c.DaskGateway.user_max_cores = 5\nc.ClusterConfig.adaptive_period = 0.5\n")
    with gw.gateway() as gateway, gateway.new_cluster() as busy:
        busy.adapt(minimum=0, maximum=4)  # 1 + 4 cores: the whole quota, for now
        with gateway.new_cluster():  # its scheduler takes a core: 3 workers are left
            with busy.get_client(set_as_default=False) as client:
                import time

                futures = client.map(time.sleep, [0.5] * 400, pure=False)

                def n_workers():
                    return len(client.scheduler_info()["workers"])

                wait_for(lambda: n_workers() == 3, timeout=90, what="3 workers under load")
                assert gw.api_json(f"cluster-details/{busy.name}")["target_workers"] == 3

                def preload_view(dask_scheduler):
                    plugin = dask_scheduler.plugins["jupyterhub-dask-gateway"]
                    return plugin.count, plugin.max_workers

                # The scheduler itself knows the ceiling: adaptive wants more, yet several
                # adapt periods later it still asks for 3 (the gateway's count).
                wait_for(lambda: client.run_on_scheduler(preload_view) == (3, 3), timeout=30)
                client.gather(futures[:40])
                assert client.run_on_scheduler(preload_view) == (3, 3)
                assert n_workers() == 3
                assert gw.api_json(f"cluster-details/{busy.name}")["target_workers"] == 3
                client.cancel(futures)
