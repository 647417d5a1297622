"""The real Kubernetes of ``scripts/k8s-localhost.sh`` for the backend's tests.

The script runs an API server on the test host 10.213.0.1 and one node (a network
namespace at 10.213.0.2, pods on 10.214.0.0/24). No image can be pulled there, so
the tests' pods run this machine's Python from a busybox image: the host's ``/``
mounted read-only and ``chroot``-ed into (the cluster's Secret and a scratch
directory mounted inside it). That is test plumbing only; everything the backend
itself makes (Secret, pods, labels, owners, mounts, ports) is as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from helpers import wait_for

K8S_DIR = os.environ.get("K8S_DIR", "/tmp/k8s-localhost")
KUBECONFIG = os.path.join(K8S_DIR, "kubeconfig")
# scripts/test.sh writes why the script could not start Kubernetes here
UNAVAILABLE = K8S_DIR + ".unavailable"
HOST_IP = "10.213.0.1"
IMAGE = "docker.io/local/busybox:1"
SECRET_MOUNT_ON_HOST = "/etc/dask-gateway"  # an empty mount point inside the chroot
RESOLVER_CONFIGMAP = "chroot-resolver"


def kubectl(*args, check=True, kubeconfig=KUBECONFIG, stdin=None, timeout=60) -> str:
    out = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def kube_json(*args, **kw) -> dict:
    return json.loads(kubectl(*args, "-o", "json", **kw))


def require_kubernetes() -> None:
    """Skip (with the script's reason) or fail: CI sets JHDG_REQUIRE_K8S and never skips."""
    required = os.environ.get("JHDG_REQUIRE_K8S") == "1"
    why = ""
    if os.path.exists(UNAVAILABLE):
        with open(UNAVAILABLE) as f:
            why = f"scripts/k8s-localhost.sh could not start Kubernetes: {f.read().strip()}"
    elif not os.path.exists(KUBECONFIG):
        why = f"no Kubernetes: {KUBECONFIG} is missing (run scripts/k8s-localhost.sh)"
    if why:
        if required:
            pytest.fail(why + " (JHDG_REQUIRE_K8S=1)")
        pytest.skip(why)


def chroot_plumbing() -> tuple[dict, dict]:
    """Test plumbing (see the module doc): the extra container and pod config that run
    this machine's Python in the busybox image."""
    container = {
        "command": ["/bin/busybox", "chroot", "/host"],
        "volumeMounts": [
            {"name": "host", "mountPath": "/host", "readOnly": True},
            {"name": "scratch", "mountPath": "/host/tmp"},
            # The chroot sees this machine's /etc, not the pod's: its resolver would wait
            # 5 s per lookup for a name server the pod network cannot reach.
            {
                "name": "resolver",
                "mountPath": "/host/etc/resolv.conf",
                "subPath": "resolv.conf",
                "readOnly": True,
            },
            {
                "name": "dask-credentials",
                "mountPath": "/host" + SECRET_MOUNT_ON_HOST,
                "readOnly": True,
            },
        ],
    }
    pod = {
        "volumes": [
            {"name": "host", "hostPath": {"path": "/"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "resolver", "configMap": {"name": RESOLVER_CONFIGMAP}},
        ]
    }
    return container, pod


def prepare_namespace(namespace: str) -> None:
    """Create ``namespace`` with what the plumbing mounts, once its service account exists."""
    kubectl("create", "namespace", namespace)
    kubectl(
        "create",
        "configmap",
        RESOLVER_CONFIGMAP,
        "-n",
        namespace,
        "--from-literal=resolv.conf=nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    # the token controller gives every namespace a default service account; pods need it
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", "-n", namespace, check=False),
        30,
        0.2,
        f"the default service account of {namespace}",
    )


def chroot_config(role: str) -> str:
    container, pod = chroot_plumbing()
    return (
        f"c.KubeClusterConfig.{role}_extra_container_config = {container!r}\n"
        f"c.KubeClusterConfig.{role}_extra_pod_config = {pod!r}\n"
    )


def kube_gateway_config(namespace: str, instance: str, extra: str = "") -> str:
    return (
        f"""
c.DaskGateway.backend_class = "kubernetes"
c.KubeBackend.kubeconfig = {KUBECONFIG!r}
c.KubeBackend.instance = {instance!r}
c.KubeClusterConfig.namespace = {namespace!r}
c.KubeClusterConfig.image = {IMAGE!r}
c.KubeClusterConfig.image_pull_policy = "Never"
c.KubeClusterConfig.python = {sys.executable!r}
# small requests so that many pods fit on the node's 2 CPUs; limits that do not throttle
c.KubeClusterConfig.scheduler_cores = 0.1
c.KubeClusterConfig.worker_cores = 0.1
c.KubeClusterConfig.scheduler_cores_limit = 2
c.KubeClusterConfig.worker_cores_limit = 2
c.KubeClusterConfig.worker_memory = "512 M"
c.KubeClusterConfig.scheduler_memory = "512 M"
c.DaskGateway.cluster_start_timeout = 60
"""
        + chroot_config("scheduler")
        + chroot_config("worker")
        + extra
    )


def new_instance() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def objects(namespace: str, instance: str, kind: str = "pods,secrets") -> list[dict]:
    """What the gateway instance has in the namespace (any state, not yet deleted)."""
    items = kube_json(
        "get",
        kind,
        "-n",
        namespace,
        "-l",
        f"gateway.dask.org/instance={instance}",
    ).get("items", [])
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def pods(namespace: str, instance: str, cluster: str, component: str) -> list[dict]:
    return kube_json(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        f"gateway.dask.org/instance={instance},gateway.dask.org/cluster={cluster},"
        f"app.kubernetes.io/component={component}",
    ).get("items", [])


def running(items: list[dict], n: int):
    alive = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    if len(alive) == n and all(p["status"].get("phase") == "Running" for p in alive):
        return alive
    return None
