"""The Kubernetes backend's pure parts and its watch, without a cluster (stand-ins for
the API server); tests/test_backend_kubernetes.py runs the whole on a real one."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from types import SimpleNamespace

import pytest

from jupyterhub_dask_gateway.backends.kubernetes import KubeBackend, KubeClusterConfig, manifests
from jupyterhub_dask_gateway.backends.kubernetes.client import KubeError
from jupyterhub_dask_gateway.backends.kubernetes.pods import pod_health
from jupyterhub_dask_gateway.backends.kubernetes.watch import NamespaceWatch


def make_cluster(**config):
    cfg = KubeClusterConfig(image="img:1", **config).to_dict()
    return SimpleNamespace(
        name="c" * 32,
        username="alice@example.org",
        token="t0ken" * 8,
        tls_cert="CERT",
        tls_key="-----BEGIN PRIVATE KEY-----",
        config=cfg,
        state={},
        workers={},
    )


# --- names and manifests ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["alice", "alice@example.org", "ALICE", "a" * 80, "-x-", "名前", "a.b_c-d"]
)
def test_label_values_and_namespace_names_are_valid_and_distinct(name):
    value, ns = manifests.label_value(name), manifests.dns_label(name)
    assert manifests._LABEL_VALUE.match(value) and manifests._DNS_LABEL.match(ns)
    assert len(value) <= 63 and len(ns) <= 63
    other = name + "x"
    assert manifests.label_value(other) != value and manifests.dns_label(other) != ns


def test_names_that_look_escaped_are_escaped_too():
    victim = "bob@example.com"
    assert manifests.dns_label(manifests.dns_label(victim)) != manifests.dns_label(victim)
    assert manifests.label_value(manifests.label_value(victim)) != manifests.label_value(victim)


def test_merge_appends_lists_and_merges_dicts_without_touching_inputs():
    base = {"a": {"b": 1, "l": [1]}, "k": "v"}
    extra = {"a": {"c": 2, "l": [2]}, "k": "w"}
    assert manifests.merge(base, extra) == {"a": {"b": 1, "c": 2, "l": [1, 2]}, "k": "w"}
    assert base == {"a": {"b": 1, "l": [1]}, "k": "v"}


def test_pod_spec_keeps_secrets_out_and_our_labels_in():
    cluster = make_cluster(
        worker_extra_pod_labels={manifests.LABEL_CLUSTER: "forged", "team": "x"},
        worker_extra_pod_config={"tolerations": [{"key": "dask"}]},
        worker_extra_container_config={"env": [{"name": "EXTRA", "value": "1"}]},
        worker_cores=0.5,
        worker_memory_limit="1 G",
    )
    worker = SimpleNamespace(name="w" * 32)
    pod = manifests.pod("gw", cluster, "ns", "uid-1", ["python"], {"A": "1"}, worker=worker)
    text = str(pod)
    assert cluster.token not in text and "PRIVATE KEY" not in text
    labels = pod["metadata"]["labels"]
    assert labels[manifests.LABEL_CLUSTER] == cluster.name and labels["team"] == "x"
    assert labels[manifests.LABEL_USER] == manifests.label_value("alice@example.org")
    assert pod["metadata"]["annotations"][manifests.ANNOTATION_USERNAME] == "alice@example.org"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    assert spec["tolerations"] == [{"key": "dask"}]
    [container] = spec["containers"]
    names = [e["name"] for e in container["env"]]
    assert names == ["A", manifests.POD_IP_VAR, "EXTRA"]
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert container["resources"]["limits"]["memory"] == str(2**30)  # "1 G", as everywhere
    [volume] = spec["volumes"]
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert "ports" not in container  # workers need no fixed ports
    secret = manifests.secret("gw", cluster, "ns")
    assert secret["stringData"]["api-token"] == cluster.token


def test_threads_follow_fractional_cores():
    assert KubeClusterConfig(worker_cores=0.25).to_dict()["worker_threads"] == 1
    assert KubeClusterConfig(worker_cores=3).to_dict()["worker_threads"] == 3
    assert KubeClusterConfig(worker_cores=3, worker_threads=1).to_dict()["worker_threads"] == 1


# --- pod status -> reasons ------------------------------------------------------------------
def _pod(phase="Pending", containers=(), conditions=(), **status):
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": phase,
            "containerStatuses": list(containers),
            "conditions": list(conditions),
            **status,
        },
    }


def _waiting(reason, message=""):
    return {"state": {"waiting": {"reason": reason, "message": message}}}


@pytest.mark.parametrize(
    "pod,alive,words",
    [
        (None, False, "was deleted"),
        (_pod("Running", [{"state": {"running": {}}}]), True, ""),
        (_pod(containers=[_waiting("ErrImagePull", 'pull "x": not found')]), False, "ErrImagePull"),
        # a registry that is busy now may answer the kubelet's next pull
        (_pod(containers=[_waiting("ErrImagePull", "429 Too Many Requests")]), True, "pending"),
        (_pod(containers=[_waiting("ImagePullBackOff", "Back-off pulling")]), False, "Back-off"),
        (_pod(containers=[_waiting("ErrImageNeverPull", "not present")]), False, "not present"),
        (_pod(containers=[_waiting("CreateContainerConfigError", "no key")]), False, "no key"),
        (_pod(containers=[_waiting("ContainerCreating")]), True, "pending: ContainerCreating"),
        (
            _pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient cpu.",
                    }
                ]
            ),
            True,
            "Insufficient cpu",
        ),
        (
            _pod(
                "Failed",
                [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
            ),
            False,
            "OOMKilled, exit code 137 (SIGKILL)",
        ),
        (_pod("Failed", reason="Evicted", message="low on memory"), False, "Evicted: low on"),
        (_pod("Succeeded", [{"state": {"terminated": {"exitCode": 0}}}]), False, "exit code 0"),
    ],
)
def test_pod_health(pod, alive, words):
    ok, text = pod_health(pod, "worker pod p")
    assert ok is alive
    assert words in text


def test_a_pod_being_deleted_says_so_even_if_its_process_exited_cleanly():
    pod = _pod("Succeeded", [{"state": {"terminated": {"exitCode": 0}}}])
    pod["metadata"]["deletionTimestamp"] = "2026-12-02T04:00:00Z"
    ok, text = pod_health(pod, "scheduler pod p")
    assert not ok and text.startswith("scheduler pod p was deleted (")


def test_pending_pod_quotes_the_latest_warning_event():
    ok, text = pod_health(
        _pod(), "scheduler pod p", ["FailedMount: MountVolume.SetUp failed for volume"]
    )
    assert ok and "FailedMount" in text


# --- the watch --------------------------------------------------------------------------------
class FakeAPI:
    """Answers the n-th list with ``listings[n]`` (the last one after); each watch call
    plays the next script of events."""

    def __init__(self, listings, scripts):
        self.listings = listings
        self.scripts = list(scripts)
        self.watched_from: list[str] = []
        self.lists = 0

    async def list_pods(self, namespace, selector):
        items = self.listings[min(self.lists, len(self.listings) - 1)]
        self.lists += 1
        return {"metadata": {"resourceVersion": str(10 * self.lists)}, "items": list(items)}

    async def list_pod_events(self, namespace):
        return {"metadata": {"resourceVersion": "1"}, "items": []}

    async def watch_pod_events(self, namespace, resource_version, timeout):
        await asyncio.Event().wait()  # a quiet namespace
        yield

    async def watch_pods(self, namespace, selector, resource_version, timeout):
        self.watched_from.append(resource_version)
        if not self.scripts:
            await asyncio.Event().wait()
        for event in self.scripts.pop(0):
            yield event


def _obj(name, rv, phase="Running"):
    return {"metadata": {"name": name, "resourceVersion": rv}, "status": {"phase": phase}}


async def test_watch_resumes_from_its_last_version_and_relists_when_it_expired():
    gone = _obj("dask-worker-gone", "5")
    api = FakeAPI(
        # the second listing misses the deletion of "gone", which the watch never saw
        [[_obj("dask-scheduler-a", "9"), gone], [_obj("dask-scheduler-a", "20", "Failed")]],
        [
            [
                {"type": "MODIFIED", "object": _obj("dask-scheduler-a", "11", "Failed")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],  # the server ends this watch; the next resumes from 15
            [{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
        ],
    )
    watch = NamespaceWatch(api, "ns", "sel", logging.getLogger("test"))
    watch.start()
    try:
        assert await watch.wait_synced(5)
        for _ in range(200):
            if api.lists == 2 and len(api.watched_from) == 3:
                break
            await asyncio.sleep(0.01)
        assert api.watched_from == ["10", "15", "20"]
        assert watch.get("dask-scheduler-a")["status"]["phase"] == "Failed"
        assert watch.get("dask-worker-gone") is None and watch.was_deleted("dask-worker-gone")
    finally:
        await watch.stop()


async def test_a_pod_created_during_a_relist_is_not_taken_for_deleted():
    api = FakeAPI([[]], [[{"type": "ERROR", "object": {"code": 410, "message": "expired"}}]])
    watch = NamespaceWatch(api, "ns", "sel", logging.getLogger("test"))
    watch.remember(_obj("dask-worker-new", "30", "Pending"))
    watch.start()
    try:
        for _ in range(200):
            if api.lists == 2:
                break
            await asyncio.sleep(0.01)
        assert watch.get("dask-worker-new") is not None
        assert not watch.was_deleted("dask-worker-new")
    finally:
        await watch.stop()


# --- addresses come from the API server, not from the scheduler -----------------------------
async def test_confirm_address_accepts_only_the_pod_ip_and_its_ports():
    backend = KubeBackend()
    cluster = make_cluster()
    cluster.state = {"namespace": "ns", "pod": "dask-scheduler-x"}
    # the API server learns of the IP a moment after the scheduler does
    answers = iter([{"status": {}}, {"status": {}}])
    watch = SimpleNamespace(get=lambda name: next(answers, {"status": {"podIP": "10.214.0.7"}}))
    backend._watches["ns"] = watch
    ip = ipaddress.ip_address
    assert await backend.confirm_address(cluster, {ip("10.214.0.7")}, 8786) == ""
    assert "not the scheduler pod's IP" in await backend.confirm_address(
        cluster, {ip("10.214.0.8")}, 8786
    )
    assert "container ports" in await backend.confirm_address(cluster, {ip("10.214.0.7")}, 22)
    cluster.config["host_network"] = True
    assert await backend.confirm_address(cluster, {ip("10.214.0.7")}, 40000) == ""


async def test_a_scheduler_naming_its_address_by_host_name_is_refused():
    backend = KubeBackend()
    cluster = make_cluster()
    cluster.state = {"namespace": "ns", "pod": "dask-scheduler-x"}
    backend._watches["ns"] = SimpleNamespace(get=lambda name: {"status": {"podIP": "10.0.0.7"}})
    why = await backend.check_addresses(cluster, {"scheduler_address": "tls://localhost:8786"})
    assert "not an IP address" in why
    ok = await backend.check_addresses(cluster, {"scheduler_address": "tls://10.0.0.7:8786"})
    assert ok == ""


async def test_refused_specs_fail_at_once_and_conflicts_reuse():
    from jupyterhub_dask_gateway.errors import BackendError, CannotStart, TryLater

    backend = KubeBackend()
    body = {"kind": "Pod", "metadata": {"name": "p"}}

    async def refuse(status):
        raise KubeError(status, f"Kubernetes API answered {status}: nope")

    async def refuse_with(status, message):
        raise KubeError(status, f"Kubernetes API answered {status}: {message}")

    with pytest.raises(CannotStart, match="refused the Pod p"):
        await backend._create(lambda ns, b: refuse(422), "ns", body)
    with pytest.raises(BackendError, match="Could not create"):
        await backend._create(lambda ns, b: refuse(500), "ns", body)

    quota = 'pods "p" is forbidden: exceeded quota: q, requested: pods=1, limited: pods=4'
    with pytest.raises(TryLater, match="exceeded quota"):
        await backend._create(lambda ns, b: refuse_with(403, quota), "ns", body, worker=True)
    with pytest.raises(TryLater):
        await backend._create(lambda ns, b: refuse(429), "ns", body, worker=True)
    with pytest.raises(CannotStart, match="exceeded quota"):  # the scheduler: no cluster
        await backend._create(lambda ns, b: refuse_with(403, quota), "ns", body)

    async def existing():
        return {"metadata": {"uid": "u"}}

    assert await backend._create(lambda ns, b: refuse(409), "ns", body, exists=existing) == {
        "metadata": {"uid": "u"}
    }


def test_each_gateway_has_its_own_instance_id_and_keeps_it(tmp_path):
    first = KubeBackend(gateway_state_dir=str(tmp_path / "a"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    value = first._own_instance()
    assert manifests._LABEL_VALUE.match(value)
    assert KubeBackend(gateway_state_dir=str(tmp_path / "a"))._own_instance() == value
    assert KubeBackend(gateway_state_dir=str(tmp_path / "b"))._own_instance() != value
    assert (tmp_path / "a" / "kubernetes-instance").stat().st_mode & 0o777 == 0o600
