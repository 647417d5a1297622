"""Clusters outlive the gateway: SIGKILL mid-computation, normal stops, re-attachment."""

import os
import signal
import threading

import psutil

from helpers import processes_under, wait_for


def test_sigkill_during_computation(make_gateway):
    gw = make_gateway()
    with gw.gateway() as gateway:
        cluster = gateway.new_cluster()
        cluster.scale(1)
        wait_for(lambda: len(cluster.scheduler_info["workers"]) == 1, 60, what="workers")
        client = cluster.get_client(set_as_default=False)
        try:
            import time

            def slow(i):
                time.sleep(0.01)
                return i

            futures = client.map(slow, range(300))
            gw.kill(signal.SIGKILL)
            # The computation in flight finishes through the proxy, which survived.
            assert sum(client.gather(futures)) == sum(range(300))
            gw.start()
            wait_for(lambda: gateway.get_cluster(cluster.name).status.name == "RUNNING", 30)
            assert cluster.name in [c.name for c in gateway.list_clusters()]
            with gw.gateway() as fresh, fresh.connect(cluster.name) as again:
                with again.get_client(set_as_default=False) as c2:
                    assert c2.submit(lambda: 1 + 1).result() == 2
                # Scaling still works after the restart (the scheduler re-attached).
                again.scale(2)
                wait_for(lambda: len(again.scheduler_info["workers"]) == 2, 60, what="workers")
        finally:
            client.close()
            cluster.shutdown()


def test_normal_stop_keeps_clusters_unless_asked(make_gateway):
    gw = make_gateway()
    with gw.gateway() as gateway:
        cluster = gateway.new_cluster()
        name = cluster.name
        gw.kill(signal.SIGTERM)
        assert gw.proc.returncode == 0
        assert processes_under(f"{gw.state_dir}/clusters/{name}"), "cluster kept running"
        gw.start()
        with gw.gateway() as g2:
            wait_for(lambda: g2.get_cluster(name).status.name == "RUNNING", 30)
            g2.stop_cluster(name)
            wait_for(lambda: g2.get_cluster(name).status.name == "STOPPED", 30)

    gw2 = make_gateway("c.DaskGateway.stop_clusters_on_shutdown = True\n")
    with gw2.gateway() as gateway:
        cluster = gateway.new_cluster()
        gw2.kill(signal.SIGTERM)
        assert not processes_under(f"{gw2.state_dir}/clusters/{cluster.name}")


def test_dead_scheduler_marks_cluster_failed(make_gateway):
    gw = make_gateway()
    with gw.gateway() as gateway:
        cluster = gateway.new_cluster()
        for p in processes_under(f"{gw.state_dir}/clusters/{cluster.name}"):
            p.kill()
        wait_for(
            lambda: gateway.get_cluster(cluster.name).status.name == "FAILED",
            30,
            what="the gateway to notice the dead scheduler",
        )


def test_dead_worker_is_replaced(make_gateway):
    gw = make_gateway()
    with gw.gateway() as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            ((addr, pid),) = client.run(os.getpid).items()
            psutil.Process(pid).kill()
            wait_for(
                lambda: set(client.scheduler_info()["workers"]) - {addr},
                60,
                what="a replacement worker",
            )


def test_concurrent_creates_and_stops_leak_nothing(make_gateway):
    gw = make_gateway("c.DaskGateway.max_clusters_per_user = 10\n")
    with gw.gateway() as gateway:
        names = []
        lock = threading.Lock()

        def create_and_stop():
            report = gateway.submit()
            with lock:
                names.append(report)
            gateway.stop_cluster(report)  # races the start

        threads = [threading.Thread(target=create_and_stop) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for name in names:
            wait_for(lambda n=name: gateway.get_cluster(n).status.name == "STOPPED", 60)
        wait_for(
            lambda: not processes_under(f"{gw.state_dir}/clusters/"),
            30,
            what="no cluster process left",
        )
