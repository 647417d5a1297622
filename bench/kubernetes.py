"""Kubernetes start latency: this gateway's KubeBackend against a bare pod (the limit)
and against the local backend, on the real Kubernetes of ``scripts/k8s-localhost.sh``.

Usage: ``python bench/kubernetes.py [--quick] [--runs N] [--no-doc]`` (as root, after
``bash scripts/k8s-localhost.sh``).

Per run, interleaved: a bare pod from the same image and command prefix as the
cluster's pods (busybox + chroot into this machine's Python, see
tests/k8s_helpers.py), timed through the API from create to phase Running and to its
Python having imported distributed (what every scheduler and worker does first);
``new_cluster()`` (client call until RUNNING: Secret and pod created, scheduler
started, first heartbeat confirmed against the pod's IP) and ``scale(1)`` until the
worker joined, on a KubeBackend gateway and on a local-backend gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import harness as h  # noqa: E402
from harness import log  # noqa: E402
from k8s_helpers import (  # noqa: E402
    HOST_IP,
    IMAGE,
    KUBECONFIG,
    SECRET_MOUNT_ON_HOST,
    chroot_plumbing,
    kube_gateway_config,
    kubectl,
    prepare_namespace,
)

USER = h.BENCH_USER  # local clusters run as their account (never root)


class KubeGateway(h.OurGateway):
    """Our gateway with the Kubernetes backend; its API on the test host's address,
    which the pods reach."""

    label = "KubeBackend"

    def config(self) -> str:
        return super().config() + f'\nc.DaskGateway.address = "{HOST_IP}:{self.api_port}"\n'

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise h.Fatal(f"{self.label} exited: {self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                listening = s.connect_ex((HOST_IP, self.api_port)) == 0
            return listening and h.port_open(self.public_port) and self.healthy()

        h.wait_for(ready, timeout, f"{self.label} to listen")


class LocalGateway(h.OurGateway):
    label = "LocalBackend"


def bare_pod_body(name: str, namespace: str) -> dict:
    """A pod as plain as a cluster's: same image, same chroot, no gateway."""
    extra_container, extra_pod = chroot_plumbing()
    mounts = [m for m in extra_container["volumeMounts"] if m["name"] != "dask-credentials"]
    container = {
        "name": "bare",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": [sys.executable, "-c", "import distributed; print('imported', flush=True)"],
        **extra_container,
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "bare"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [container],
            **extra_pod,
        },
    }


async def bare_pod(namespace: str) -> tuple[float, float]:
    """(seconds to Running, seconds to "imported") for one bare pod, through the API."""
    from kubernetes_asyncio.client import ApiClient, CoreV1Api

    from jupyterhub_dask_gateway.backends.kubernetes.client import connect

    configuration, _ = await connect(KUBECONFIG)
    api_client = ApiClient(configuration)
    core = CoreV1Api(api_client)
    name = f"bare-{uuid.uuid4().hex[:8]}"
    try:
        t0 = time.perf_counter()
        await core.create_namespaced_pod(namespace, bare_pod_body(name, namespace))
        # a quick Python may finish before a poll sees Running: started is enough
        while (await core.read_namespaced_pod(name, namespace)).status.phase not in (
            "Running",
            "Succeeded",
        ):
            if time.perf_counter() - t0 > 60:
                raise h.Fatal("bare pod not Running after 60 s")
            await asyncio.sleep(0.02)
        running = time.perf_counter() - t0
        while "imported" not in (await core.read_namespaced_pod_log(name, namespace) or ""):
            if time.perf_counter() - t0 > 60:
                raise h.Fatal("bare pod's Python did not finish importing in 60 s")
            await asyncio.sleep(0.02)
        return running, time.perf_counter() - t0
    finally:
        await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        await api_client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 4)")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 4)
    if not os.path.exists(KUBECONFIG) or kubectl("get", "nodes", check=False) == "":
        print("No Kubernetes: run scripts/k8s-localhost.sh (as root) first.", file=sys.stderr)
        return 2
    gc.disable()
    h.quiet_gateway_finalizers()
    os.makedirs(SECRET_MOUNT_ON_HOST, exist_ok=True)
    namespace = f"jhdg-bench-{uuid.uuid4().hex[:6]}"
    prepare_namespace(namespace)
    scratch = h.scratch_dir("jhdg-bench-k8s-")
    h.prepare_accounts(scratch)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    samples: dict = {}
    errors: list[str] = []
    kube = KubeGateway(scratch / "kube", kube_gateway_config(namespace, f"bench-{namespace}"))
    local = LocalGateway(scratch / "local", "c.ClusterConfig.worker_memory = '512 M'\n")
    try:
        for s in (kube, local):
            s.start()
        for i in range(runs):
            h.settle()
            log(f"run {i + 1}/{runs}: bare pod")
            running, imported = asyncio.run(bare_pod(namespace))
            samples.setdefault(("bare_running", "bare"), []).append(running)
            samples.setdefault(("bare_imported", "bare"), []).append(imported)
            for s in (kube, local) if i % 2 == 0 else (local, kube):
                h.settle()
                log(f"run {i + 1}/{runs}: {s.label}")
                h.time_start_and_scale(s, USER, 1, samples, errors)
                gc.collect()
    finally:
        for s in (kube, local):
            s.cleanup()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    def med(key, label):
        return h.median(samples.get((key, label), []))

    bare_run, bare_imp = med("bare_running", "bare"), med("bare_imported", "bare")
    rows = []
    for key, what in (
        ("start", "new_cluster() until RUNNING"),
        ("workers", "scale(1) until joined"),
    ):
        k, loc = med(key, kube.label), med(key, local.label)
        rows.append(
            [
                what,
                "n/a" if k is None else f"{k:.2f} s",
                "n/a" if bare_imp is None else f"{bare_imp:.2f} s",
                "n/a" if not (k and bare_imp) else f"{k / bare_imp:.2f}×",
                "n/a" if loc is None else f"{loc:.2f} s",
                "n/a" if not (k and loc) else f"{k / loc:.2f}×",
            ]
        )
    table = h.markdown_table(
        [
            "metric (median)",
            "KubeBackend",
            "bare pod: create → Python imported distributed",
            "ours ÷ bare pod",
            "LocalBackend",
            "Kube ÷ local",
        ],
        rows,
    )
    notes = [
        f"bare pod create → Running: {bare_run:.2f} s (median of {runs})" if bare_run else "",
        "new_cluster() is one pod (the scheduler's, after its Secret) plus the scheduler "
        "starting with TLS and the preload, its first heartbeat and the address check; "
        "scale(1) is one pod plus the worker connecting; the bare pod is one create "
        "whose Python only imports distributed, timed through the API (its phase, then "
        "its log), so it includes the kubelet's status report, which the worker's join "
        "(seen by the scheduler) does not wait for: hence below 1×",
        "the test node's pods run with CPU limits of 2 (tests/k8s_helpers.py): with a "
        "limit equal to a 0.1-core request, a scheduler takes ~10 s to import",
        *[f"error: {e}" for e in errors],
    ]
    command = (
        "python bench/kubernetes.py"
        + (" --quick" if args.quick else "")
        + (f" --runs {args.runs}" if args.runs else "")
    )
    how = f"{runs} runs of each, interleaved, medians"
    body = h.report(command, how, elapsed, load_start, table, [n for n in notes if n])
    print(body)
    if not args.no_doc:
        h.write_section("kubernetes", body)
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
