"""End to end on a real Kubernetes: the unmodified client, a gateway from its CLI,
kube-apiserver + controller-manager + scheduler + kubelet from ``scripts/k8s-localhost.sh``.

Skipped only when the script said why it could not start Kubernetes (CI sets
``JHDG_REQUIRE_K8S=1``, which turns that into a failure). Every test has its own
gateway instance label; whatever carries it is deleted at the end.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
import signal
import time
import uuid

import pytest
import requests
from k8s_helpers import (
    HOST_IP,
    SECRET_MOUNT_ON_HOST,
    kube_gateway_config,
    kube_json,
    kubectl,
    new_instance,
    objects,
    pods,
    prepare_namespace,
    require_kubernetes,
    running,
)

from helpers import PASSWORD, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def collect_garbage():
    yield
    gc.collect()  # the client's finalizers now, not on its loop thread later


@pytest.fixture(scope="module")
def namespace():
    require_kubernetes()

    def node_ready():
        return "True" in kubectl(
            "get",
            "nodes",
            "-o",
            'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )

    wait_for(node_ready, 60, 0.5, "a Ready Kubernetes node (scripts/k8s-localhost.sh)")
    os.makedirs(SECRET_MOUNT_ON_HOST, exist_ok=True)
    name = f"jhdg-{uuid.uuid4().hex[:8]}"
    prepare_namespace(name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    try:
        os.rmdir(SECRET_MOUNT_ON_HOST)
    except OSError:
        pass


@pytest.fixture
def instance(namespace):
    name = new_instance()
    yield name
    kubectl(
        "delete",
        "pods,secrets",
        "-n",
        namespace,
        "-l",
        f"gateway.dask.org/instance={name}",
        "--grace-period=0",
        "--force",
        check=False,
    )


def k8s_gateway(make_gateway, namespace, instance, extra="", **kw):
    return make_gateway(kube_gateway_config(namespace, instance, extra), api_host=HOST_IP, **kw)


def gone(namespace, instance):
    return not objects(namespace, instance)


def test_client_workflow_on_kubernetes(make_gateway, namespace, instance):
    gw = k8s_gateway(make_gateway, namespace, instance)
    with gw.gateway() as g:
        cluster = g.new_cluster()
        try:
            name = cluster.name
            [scheduler] = wait_for(
                lambda: running(pods(namespace, instance, name, "dask-scheduler"), 1),
                60,
                0.2,
                "the scheduler pod",
            )
            secret = kube_json("get", "secret", f"dask-credentials-{name}", "-n", namespace)
            # the Secret is the root object: the pods are its, and carry every label
            [owner] = scheduler["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"]) == ("Secret", secret["metadata"]["uid"])
            labels = scheduler["metadata"]["labels"]
            assert labels["gateway.dask.org/user"] == "alice"
            assert labels["gateway.dask.org/cluster"] == name
            assert labels["app.kubernetes.io/managed-by"] == "jupyterhub-dask-gateway"
            # secrets are mounted, never in the spec (readable by whoever reads pods)
            token = base64.b64decode(secret["data"]["api-token"]).decode()
            spec_text = str(scheduler["spec"])
            assert token not in spec_text and "PRIVATE KEY" not in spec_text
            assert scheduler["spec"]["automountServiceAccountToken"] is False

            cluster.scale(2)
            workers = wait_for(
                lambda: running(pods(namespace, instance, name, "dask-worker"), 2),
                90,
                0.3,
                "2 worker pods Running",
            )
            [w_owner] = workers[0]["metadata"]["ownerReferences"]
            assert w_owner["uid"] == secret["metadata"]["uid"]
            # workers see the key pair only, not the scheduler's API token
            [vol] = [v for v in workers[0]["spec"]["volumes"] if v["name"] == "dask-credentials"]
            assert {i["key"] for i in vol["secret"]["items"]} == {"tls.crt", "tls.key"}
            with cluster.get_client(set_as_default=False) as client:
                # through the gateway's proxy (SNI) to the pod's IP and fixed port
                pod_ip = scheduler["status"]["podIP"]
                assert client.scheduler_info()["address"] == f"tls://{pod_ip}:8786"
                client.wait_for_workers(2, timeout=60)
                assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
                assert sum(client.gather(client.map(lambda x: x * x, range(100)))) == 328350
                hosts = set(client.run(lambda: os.environ.get("HOSTNAME", "")).values())
                assert hosts == {p["metadata"]["name"][:63] for p in workers}
                assert name in [c.name for c in g.list_clusters()]
                logs = api_json(gw, f"clusters/{name}/logs", tail=200)["text"]
                assert "Scheduler at" in logs
                # the dashboard, through the gateway's dashboard proxy to the pod's IP
                page = requests.get(cluster.dashboard_link, auth=("alice", PASSWORD), timeout=30)
                assert page.status_code == 200 and "Dask" in page.text
                # ... and never directly: the scheduler wants the key only the proxy adds
                direct = requests.get(f"http://{pod_ip}:8787/status", timeout=30)
                assert direct.status_code == 403

                cluster.adapt(minimum=1, maximum=2)
                wait_for(
                    lambda: running(pods(namespace, instance, name, "dask-worker"), 1),
                    90,
                    0.3,
                    "adaptive scaling down to 1 worker pod",
                )
                assert client.submit(lambda: 6 * 7).result(timeout=60) == 42
        finally:
            cluster.shutdown()
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")


def test_deleted_pods(make_gateway, namespace, instance):
    gw = k8s_gateway(make_gateway, namespace, instance)
    with gw.gateway() as g:
        cluster = g.new_cluster()
        name = cluster.name
        try:
            cluster.scale(1)
            [first] = wait_for(
                lambda: running(pods(namespace, instance, name, "dask-worker"), 1),
                90,
                0.3,
                "a worker pod",
            )
            kubectl("delete", "pod", first["metadata"]["name"], "-n", namespace, "--wait=false")
            [second] = wait_for(
                lambda: [
                    p
                    for p in running(pods(namespace, instance, name, "dask-worker"), 1) or []
                    if p["metadata"]["name"] != first["metadata"]["name"]
                ],
                90,
                0.3,
                "a new worker pod replacing the deleted one",
            )
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(1, timeout=60)
                assert client.submit(lambda: 1 + 1).result(timeout=60) == 2
            events = api_json(gw, f"clusters/{name}/events")["events"]
            assert any(
                e["kind"] == "worker_failed" and first["metadata"]["name"] in e["message"]
                for e in events
            ), events

            kubectl("delete", "pod", f"dask-scheduler-{name}", "-n", namespace, "--wait=false")
            wait_for(lambda: g.get_cluster(name).status.name == "FAILED", 30, 0.2, "FAILED")
            reason = api_json(gw, f"cluster-details/{name}")["reason"]
            assert f"scheduler pod dask-scheduler-{name}" in reason, reason
            assert "deleted" in reason, reason
        finally:
            cluster.shutdown()
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "nothing left of the failed cluster")


def test_an_oom_killed_worker_is_explained_and_replaced(make_gateway, namespace, instance):
    """The kernel kills a worker over its pod's memory limit: the reason (OOMKilled) is
    kept in the cluster's events before the pod goes, and a new worker takes its place."""
    extra = (
        'c.KubeClusterConfig.worker_memory = "250 M"\n'
        'c.KubeClusterConfig.worker_memory_limit = "300 M"\n'
    )
    gw = k8s_gateway(make_gateway, namespace, instance, extra)
    with gw.gateway() as g, g.new_cluster() as cluster:
        cluster.scale(1)
        [first] = wait_for(
            lambda: running(pods(namespace, instance, cluster.name, "dask-worker"), 1),
            90,
            0.3,
            "a worker pod",
        )
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)

            def hog():
                blocks = []
                while True:
                    blocks.append(bytearray(50 * 2**20))  # touched: really resident

            client.submit(hog, pure=False)

            def explained():
                events = api_json(gw, f"clusters/{cluster.name}/events")["events"]
                return [e for e in events if e["kind"] == "worker_failed"]

            [failed] = wait_for(explained, 90, 0.3, "the killed worker in the events")
            assert "OOMKilled" in failed["message"], failed
            assert first["metadata"]["name"] in failed["message"]
            wait_for(
                lambda: [
                    p
                    for p in running(pods(namespace, instance, cluster.name, "dask-worker"), 1)
                    or []
                    if p["metadata"]["name"] != first["metadata"]["name"]
                ],
                90,
                0.3,
                "a new worker pod",
            )
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")


def test_pods_nothing_can_schedule_say_why_at_the_timeout(make_gateway, namespace, instance):
    """An unschedulable pod waits (an autoscaler might add a node); the start timeouts
    then quote the scheduler's words."""
    extra = (
        "c.DaskGateway.cluster_start_timeout = 6\n"
        "c.KubeClusterConfig.scheduler_cores = 64\n"
        "c.KubeClusterConfig.scheduler_cores_limit = 64\n"
    )
    gw = k8s_gateway(make_gateway, namespace, instance, extra)
    from dask_gateway import GatewayClusterError

    with gw.gateway() as g:
        with pytest.raises(GatewayClusterError, match="Insufficient cpu"):
            g.new_cluster()
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "nothing left of it")

    extra = (
        "c.DaskGateway.worker_start_timeout = 6\n"
        "c.KubeClusterConfig.worker_cores = 64\n"
        "c.KubeClusterConfig.worker_cores_limit = 64\n"
    )
    gw = k8s_gateway(make_gateway, namespace, instance, extra)
    with gw.gateway() as g, g.new_cluster() as cluster:
        cluster.scale(1)

        def failed_workers():
            events = api_json(gw, f"clusters/{cluster.name}/events")["events"]
            return [e for e in events if e["kind"] == "worker_failed"]

        [failed, *_] = wait_for(failed_workers, 60, 0.3, "the worker's start to time out")
        assert "did not start within 6 s" in failed["message"], failed
        assert "Insufficient cpu" in failed["message"], failed
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")


def test_missing_image_fails_the_start_with_the_kubelet_reason(make_gateway, namespace, instance):
    from dask_gateway import GatewayClusterError

    extra = 'c.KubeClusterConfig.image = "docker.io/local/no-such-image:1"\n'
    gw = k8s_gateway(make_gateway, namespace, instance, extra)
    with gw.gateway() as g:
        started = time.monotonic()
        with pytest.raises(GatewayClusterError, match="ErrImageNeverPull"):
            g.new_cluster()
        assert time.monotonic() - started < 60  # well within the start timeout
        [cluster] = g.list_clusters(status="FAILED")
        info = api_json(gw, f"cluster-details/{cluster.name}")
        assert "no-such-image" in info["reason"], info["reason"]
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "nothing left of the failed start")


def test_gateway_sigkill_then_reattach(make_gateway, namespace, instance):
    gw = k8s_gateway(make_gateway, namespace, instance)
    with gw.gateway() as g:
        cluster = g.new_cluster()
        name = cluster.name
        try:
            cluster.scale(1)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(1, timeout=90)

                def slow(i):
                    time.sleep(0.01)
                    return i

                futures = client.map(slow, range(300))
                gw.kill(signal.SIGKILL)
                # the connected client keeps computing (the proxy survived)
                assert sum(client.gather(futures)) == sum(range(300))
                # something of a cluster the store does not know: removed at restart
                stray = f"{uuid.uuid4().hex}"
                kubectl(
                    "create",
                    "secret",
                    "generic",
                    f"dask-credentials-{stray}",
                    "-n",
                    namespace,
                )
                kubectl(
                    "label",
                    "secret",
                    f"dask-credentials-{stray}",
                    "-n",
                    namespace,
                    "app.kubernetes.io/managed-by=jupyterhub-dask-gateway",
                    f"gateway.dask.org/instance={instance}",
                    f"gateway.dask.org/cluster={stray}",
                )
                # and a worker pod of the live cluster that no worker record owns
                stray_pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"dask-worker-{name}-stray",
                        "labels": {
                            "app.kubernetes.io/managed-by": "jupyterhub-dask-gateway",
                            "app.kubernetes.io/component": "dask-worker",
                            "gateway.dask.org/instance": instance,
                            "gateway.dask.org/cluster": name,
                        },
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "x",
                                "image": "docker.io/local/busybox:1",
                                "imagePullPolicy": "Never",
                                "args": ["sleep", "600"],
                            }
                        ]
                    },
                }
                kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(stray_pod))
                gw.start()
                wait_for(lambda: g.get_cluster(name).status.name == "RUNNING", 30, 0.2, "RUNNING")
                assert name in [c.name for c in g.list_clusters()]
                assert client.submit(lambda: 2 + 2).result(timeout=60) == 4
                wait_for(
                    lambda: (
                        not kubectl(
                            "get",
                            "secret",
                            f"dask-credentials-{stray}",
                            "-n",
                            namespace,
                            "--ignore-not-found",
                        )
                    ),
                    30,
                    0.2,
                    "the stray Secret to be removed",
                )
                wait_for(
                    lambda: (
                        not [
                            p
                            for p in pods(namespace, instance, name, "dask-worker")
                            if p["metadata"]["name"].endswith("-stray")
                            and not p["metadata"].get("deletionTimestamp")
                        ]
                    ),
                    30,
                    0.2,
                    "the stray worker pod to be removed",
                )
                # the re-attached gateway still scales the cluster
                cluster.scale(2)
                client.wait_for_workers(2, timeout=90)
        finally:
            cluster.shutdown()
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")


def test_host_network_pods(make_gateway, namespace, instance):
    gw = k8s_gateway(make_gateway, namespace, instance, "c.KubeClusterConfig.host_network = True\n")
    with gw.gateway() as g, g.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=90)
            assert client.submit(lambda: 3 * 3).result(timeout=60) == 9
        [scheduler] = pods(namespace, instance, cluster.name, "dask-scheduler")
        assert scheduler["spec"]["hostNetwork"] is True
        address = cluster.get_client(set_as_default=False).scheduler_info()["address"]
        assert address.startswith(f"tls://{scheduler['status']['podIP']}:")
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")


def test_a_namespace_per_user(make_gateway, namespace, instance):
    from dask_gateway import GatewayClusterError

    prepare_namespace(f"{namespace}-alice")
    try:
        extra = f'c.KubeClusterConfig.namespace = "{namespace}-{{username}}"\n'
        gw = k8s_gateway(make_gateway, namespace, instance, extra)
        with gw.gateway() as g, g.new_cluster() as cluster:
            assert running(pods(f"{namespace}-alice", instance, cluster.name, "dask-scheduler"), 1)
            assert not objects(namespace, instance)
        wait_for(lambda: gone(f"{namespace}-alice", instance), 60, 0.3, "alice's pods to go")
        # bob has no namespace: his start fails at once, with Kubernetes' words
        with gw.gateway(user="bob") as g:
            with pytest.raises(GatewayClusterError, match=f"{namespace}-bob.*not found"):
                g.new_cluster()
    finally:
        kubectl("delete", "namespace", f"{namespace}-alice", "--wait=false", check=False)


def sa_kubeconfig(tmp_path, namespace, account) -> str:
    """A kubeconfig holding the token of service account ``account``."""
    kubectl("create", "serviceaccount", account, "-n", namespace)
    secret = wait_for(
        lambda: (
            kube_json("get", "serviceaccount", account, "-n", namespace).get("secrets") or [{}]
        )[0].get("name"),
        30,
        0.2,
        "the service account's token",
    )
    data = kube_json("get", "secret", secret, "-n", namespace)["data"]
    token = base64.b64decode(data["token"]).decode()
    path = tmp_path / f"kubeconfig-{account}"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: "https://{HOST_IP}:16443", insecure-skip-tls-verify: true}}
users:
- name: {account}
  user: {{token: "{token}"}}
contexts:
- name: local
  context: {{cluster: local, user: {account}, namespace: {namespace}}}
current-context: local
"""
    )
    path.chmod(0o600)
    return str(path)


def test_rbac_manifests_are_enough_and_required(make_gateway, namespace, instance, tmp_path):
    manifest = open(os.path.join(REPO, "deploy", "kubernetes", "rbac.yaml")).read()
    manifest = manifest.replace("namespace: jhub", f"namespace: {namespace}")
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    with_role = sa_kubeconfig(tmp_path, namespace, "hub")
    # the API server's authorizer learns of a new RoleBinding from a watch, a moment later
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "create",
                "pods",
                "-n",
                namespace,
                kubeconfig=with_role,
                check=False,
            ).strip()
            == "yes"
        ),
        30,
        0.2,
        "the RoleBinding to take effect",
    )
    gw = k8s_gateway(
        make_gateway, namespace, instance, f"c.KubeBackend.kubeconfig = {with_role!r}\n"
    )
    with gw.gateway() as g, g.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=90)
            assert client.submit(lambda: 5).result(timeout=60) == 5
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")

    without = sa_kubeconfig(tmp_path, namespace, "nobody")
    gw2 = k8s_gateway(
        make_gateway,
        namespace,
        instance,
        f"c.KubeBackend.kubeconfig = {without!r}\n",
        start=False,
    )
    with pytest.raises(TimeoutError, match="gateway exited"):
        gw2.start(timeout=10)
    log = gw2.log()
    assert "Not starting" in log and "cannot create pods" in log, log[-2000:]
    assert "deploy/kubernetes/rbac.yaml" in log


def api_json(gw, path: str, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return gw.api_json(path + (f"?{query}" if query else ""))


def test_a_hub_notebook_uses_the_kubernetes_backend(make_hub, namespace, instance, accounts):
    """The whole path under a real Hub: configure_jupyterhub with this backend, a
    notebook's zero-config Gateway(), pods heartbeating to the service's address."""
    from test_hub import NOTEBOOK_CODE, run_in_kernel

    hub = make_hub(
        service_host=HOST_IP,
        configure_args='backend_class="kubernetes",',
        gateway_config=kube_gateway_config(namespace, instance),
    )
    token = hub.new_token("alice")["token"]
    out = run_in_kernel(hub, "alice", token, NOTEBOOK_CODE)
    assert "RESULT 42" in out, out
    name = re.search(r"CLUSTER (\w+)", out).group(1)
    [event] = [
        e
        for e in kube_json("get", "events", "-n", namespace)["items"]
        if e["involvedObject"]["name"] == f"dask-scheduler-{name}" and e["reason"] == "Started"
    ]
    assert event
    wait_for(lambda: gone(namespace, instance), 60, 0.3, "the pods and Secret to go")
