"""``KubeBackend``: schedulers and workers as Kubernetes pods.

No CRD, no controller deployment, no Traefik: the gateway's own manager decides,
its store remembers, its proxy routes by SNI to the scheduler pod's IP. This
module creates and deletes the objects of ``manifests`` and answers every check
from the namespace watches of ``watch`` (``pods`` reads what their status means).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets

from traitlets import Float, Unicode, default

from ...addresses import split_address
from ...errors import BackendError, CannotStart, StartupError, TryLater
from ...files import write_private
from .. import base
from . import manifests
from .client import KubeAPI, KubeError, connect
from .config import API_PORT, DASHBOARD_PORT, SCHEDULER_PORT, KubeClusterConfig
from .pods import pod_health, pod_ip
from .watch import NamespaceWatch

#: What the gateway must be allowed to do in each namespace it runs clusters in
#: (deploy/kubernetes/rbac.yaml grants exactly this).
REQUIRED_ACCESS = (
    ("create", "pods"),
    ("delete", "pods"),
    ("deletecollection", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("get", "pods"),
    ("get", "pods/log"),
    ("create", "secrets"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("delete", "secrets"),
    ("list", "events"),
    ("watch", "events"),
)

_LOG_BYTES = 256 * 1024
_POD_IP_WAIT = 10  # seconds a first heartbeat waits for the API to know the pod's IP
# Answers that will not change by retrying: an invalid spec, a refusal, a namespace
# that does not exist.
_PERMANENT = (400, 403, 404, 422)


class KubeBackend(base.Backend):
    """Runs each cluster as a Secret, a scheduler pod and worker pods (``c.KubeBackend.*``)."""

    _abstract = False

    @default("cluster_config_class")
    def _default_cluster_config_class(self):
        return KubeClusterConfig

    @default("listen_host")
    def _default_listen_host(self):
        # expanded by Kubernetes from the container's environment (the downward API)
        return f"$({manifests.POD_IP_VAR})"

    kubeconfig = Unicode(
        "",
        help="""Kubeconfig file to use. Empty (the default): the pod's service account
        when the gateway runs in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``.""",
    ).tag(config=True)

    instance = Unicode(
        "",
        help="""Value of the ``gateway.dask.org/instance`` label on everything this
        gateway creates: it watches, re-attaches to and removes only what carries it.
        Empty (the default): an id made once for this gateway and kept in its state
        directory (``kubernetes-instance``), so two gateways sharing a namespace never
        take each other's pods for leftovers. Set it to keep the value across a new
        state directory.""",
    ).tag(config=True)

    request_timeout = Float(30, min=1, help="Seconds one Kubernetes API request may take.").tag(
        config=True
    )

    #: a kubelet reports an OOM kill a second or two after the scheduler lost the worker
    departure_check_seconds = 5.0

    sweep_period = Float(
        300,
        min=1,
        help="""Seconds between sweeps that delete pods and Secrets of this instance that no
        active cluster or worker owns (a stop that failed, a crash in the middle of one).""",
    ).tag(config=True)

    sync_timeout = Float(
        10,
        min=0,
        help="""Seconds a check waits for a namespace's first pod listing; until then a
        cluster counts as alive (an unreachable API says nothing about the pods).""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.api: KubeAPI | None = None
        self.default_namespace = "default"
        self._watches: dict[str, NamespaceWatch] = {}
        self._notes: dict[str, str] = {}  # pod -> why it is not running yet
        # what this gateway has running: everything else of its instance is a leftover
        self._clusters: set[str] = set()
        self._worker_pods: set[str] = set()
        self._sweeper: asyncio.Task | None = None

    # --- lifetime ---------------------------------------------------------------------------
    def _own_instance(self) -> str:
        """This gateway's instance id, made once and kept in its state directory."""
        path = os.path.join(self.gateway_state_dir, "kubernetes-instance")
        try:
            with open(path) as f:
                value = f.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = f"jhdg-{secrets.token_hex(5)}"
        write_private(path, value + "\n", exclusive=True, durable=True)
        return value

    async def setup(self) -> None:
        if not self.instance:
            try:
                self.instance = await asyncio.to_thread(self._own_instance)
            except OSError as exc:
                why = f"Kubernetes backend: cannot keep its instance id: {exc}"
                raise StartupError(why) from None
        try:
            configuration, self.default_namespace = await connect(self.kubeconfig)
        except BackendError as exc:
            raise StartupError(f"Kubernetes backend: {exc.message}") from None
        self.api = KubeAPI(configuration, self.request_timeout)
        namespace = self._configured_namespace()
        if "{" not in namespace:
            try:
                await self._check_access(namespace)
            except StartupError:
                await self.cleanup()
                raise
            self._watch(namespace)

    async def cleanup(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await asyncio.gather(*(w.stop() for w in self._watches.values()))
        self._watches.clear()
        if self.api is not None:
            await self.api.close()
            self.api = None

    def _configured_namespace(self) -> str:
        return self.cluster_config_class(parent=self).namespace or self.default_namespace

    async def _check_access(self, namespace: str) -> None:
        try:
            answers = await asyncio.gather(
                *(self.api.can(namespace, verb, what) for verb, what in REQUIRED_ACCESS)
            )
        except KubeError as exc:
            raise StartupError(f"Kubernetes backend: cannot check permissions: {exc}") from None
        missing = [
            f"{v} {w}" for (v, w), ok in zip(REQUIRED_ACCESS, answers, strict=True) if not ok
        ]
        if missing:
            raise StartupError(
                f"the Kubernetes credentials cannot {', '.join(missing)} in namespace "
                f"{namespace!r}; apply deploy/kubernetes/rbac.yaml there for the gateway's "
                "service account (docs/kubernetes.md)"
            )

    def _watch(self, namespace: str) -> NamespaceWatch:
        watch = self._watches.get(namespace)
        if watch is None:
            selector = manifests.cluster_selector(self.instance)
            watch = self._watches[namespace] = NamespaceWatch(
                self.api, namespace, selector, self.log
            )
            watch.start()
        return watch

    def _namespace(self, cluster) -> str:
        if cluster.state.get("namespace"):
            return cluster.state["namespace"]
        template = cluster.config.get("namespace") or self.default_namespace
        try:
            return template.format(username=manifests.dns_label(cluster.username))
        except (KeyError, IndexError, ValueError) as exc:
            raise CannotStart(f"Invalid KubeClusterConfig.namespace {template!r}: {exc}") from None

    async def reattach(self, clusters) -> None:
        """Watch the namespaces of the store's clusters again (finished ones too: their
        objects may be left over) and remove what no active cluster owns."""
        namespaces = set()
        for c in clusters:
            try:
                namespaces.add(self._namespace(c))
            except CannotStart:
                continue  # an invalid namespace template: nothing was created
            if not c.status.done:
                self._clusters.add(c.name)
                self._worker_pods.update(
                    w.state["pod"]
                    for w in c.workers.values()
                    if not w.status.done and (w.state or {}).get("pod")
                )
        configured = self._configured_namespace()
        if "{" not in configured:
            namespaces.add(configured)
        for namespace in sorted(namespaces):
            self._watch(namespace)
        await self.sweep()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_period)
            try:
                await self.sweep()
            except Exception:
                self.log.exception("Sweeping leftover Kubernetes objects failed")

    async def sweep(self) -> None:
        """Delete this instance's objects that no active cluster or worker owns."""
        selector = manifests.cluster_selector(self.instance)
        for namespace in sorted(self._watches):
            try:
                secrets = (await self.api.list_secrets(namespace, selector)).get("items") or []
                pods = (await self.api.list_pods(namespace, selector)).get("items") or []
            except KubeError as exc:
                self.log.warning("Cannot list leftovers in namespace %s: %s", namespace, exc)
                continue
            owners = {
                (o["metadata"].get("labels") or {}).get(manifests.LABEL_CLUSTER, "")
                for o in secrets + pods
            }
            for name in sorted(owners - self._clusters - {""}):
                self.log.info("Removing the pods and Secret of cluster %s (not active)", name)
                try:
                    await self._delete_cluster_objects(namespace, name)
                except KubeError as exc:
                    self.log.warning("Cannot remove leftovers of cluster %s: %s", name, exc)
            for pod in pods:
                meta = pod["metadata"]
                labels = meta.get("labels") or {}
                if (
                    labels.get(manifests.LABEL_COMPONENT) == manifests.WORKER
                    and labels.get(manifests.LABEL_CLUSTER) in self._clusters
                    and meta["name"] not in self._worker_pods
                    and not meta.get("deletionTimestamp")
                ):
                    self.log.info("Removing worker pod %s (no worker of its cluster)", meta["name"])
                    try:
                        await self.api.delete_pod(namespace, meta["name"])
                    except KubeError as exc:
                        self.log.warning("Cannot remove pod %s: %s", meta["name"], exc)

    async def _delete_cluster_objects(self, namespace: str, cluster_name: str) -> None:
        # The Secret owns the pods (garbage collection would do), but deleting them
        # here too frees their resources now, not when the collector comes round.
        await self.api.delete_pods(
            namespace, manifests.cluster_selector(self.instance, cluster_name)
        )
        await self.api.delete_secret(namespace, manifests.secret_name(cluster_name))

    # --- the contract ---------------------------------------------------------------------
    async def start_cluster(self, cluster, env: dict) -> dict:
        cfg = cluster.config
        if not cfg.get("image"):
            raise CannotStart("No image for the cluster's pods: set c.KubeClusterConfig.image")
        namespace = self._namespace(cluster)
        watch = self._watch(namespace)
        self._clusters.add(cluster.name)  # before anything exists: the sweep spares it
        state = {"namespace": namespace, "pod": manifests.scheduler_pod_name(cluster.name)}
        secret = await self._create(
            self.api.create_secret,
            namespace,
            manifests.secret(self.instance, cluster, namespace),
            exists=lambda: self.api.read_secret(namespace, manifests.secret_name(cluster.name)),
        )
        state["secret_uid"] = secret["metadata"]["uid"]
        host_network = bool(cfg.get("host_network"))
        ports = (0, 0, 0) if host_network else (SCHEDULER_PORT, DASHBOARD_PORT, API_PORT)
        env = {
            **(cfg.get("environment") or {}),
            **env,
            # the preload reads the token from this file: never in the pod's spec
            "DASK_GATEWAY_API_TOKEN": f"{manifests.MOUNT_PATH}/{manifests.TOKEN_KEY}",
            "JHDG_API_PORT": str(ports[2]),
            **self._tls_env("scheduler"),
        }
        body = manifests.pod(
            self.instance,
            cluster,
            namespace,
            state["secret_uid"],
            self.scheduler_command(cluster, port=ports[0], dashboard_port=ports[1]),
            env,
        )
        try:
            pod = await self._create(self.api.create_pod, namespace, body)
        except BaseException:
            try:  # nothing of a start that failed stays behind
                await self._delete_cluster_objects(namespace, cluster.name)
            except KubeError as exc:
                self.log.warning("Cluster %s: cleaning up failed: %s", cluster.name, exc)
            raise
        if pod:
            watch.remember(pod)
        self.log.info("Created scheduler pod %s/%s", namespace, state["pod"])
        return state

    async def stop_cluster(self, cluster) -> None:
        if self.api is None:
            raise BackendError("The Kubernetes backend is not set up")
        try:
            namespace = self._namespace(cluster)
        except CannotStart:
            return  # its namespace never had a valid name: nothing was created
        await self._delete_cluster_objects(namespace, cluster.name)
        self._clusters.discard(cluster.name)
        watch = self._watches.get(namespace)
        for name in [cluster.state.get("pod")] + [
            (w.state or {}).get("pod") for w in cluster.workers.values()
        ]:
            if name:
                self._notes.pop(name, None)
                self._worker_pods.discard(name)
                if watch is not None:
                    watch.forget(name)
        self.log.info("Deleted the pods and Secret of cluster %s", cluster.name)

    async def start_worker(self, cluster, worker, env: dict) -> dict:
        namespace = self._namespace(cluster)
        env = {**(cluster.config.get("environment") or {}), **env, **self._tls_env("worker")}
        body = manifests.pod(
            self.instance,
            cluster,
            namespace,
            cluster.state["secret_uid"],
            self.worker_command(cluster, worker),
            env,
            worker=worker,
        )
        name = body["metadata"]["name"]
        self._worker_pods.add(name)
        try:
            pod = await self._create(self.api.create_pod, namespace, body, worker=True)
        except BaseException:
            self._worker_pods.discard(name)
            raise
        if pod:
            self._watch(namespace).remember(pod)
        return {"pod": name}

    async def stop_worker(self, cluster, worker) -> None:
        name = (worker.state or {}).get("pod")
        if name:
            await self.api.delete_pod(self._namespace(cluster), name)
            self._notes.pop(name, None)
            self._worker_pods.discard(name)

    async def _create(self, create, namespace: str, body: dict, exists=None, worker=False):
        """Create an object; one left by an earlier attempt of the same start is reused.

        For a worker, a full ResourceQuota, throttling and server errors are
        ``TryLater``: the cluster keeps running and asks again.
        """
        try:
            return await create(namespace, body)
        except KubeError as exc:
            if exc.status == 409:
                return await exists() if exists else {}
            what = f"{body['kind']} {body['metadata']['name']}"
            if worker and (
                exc.status in (429, 0) or exc.status >= 500 or "exceeded quota" in exc.message
            ):
                raise TryLater(f"Kubernetes did not take the {what}: {exc.message}") from None
            if exc.status in _PERMANENT:
                raise CannotStart(f"Kubernetes refused the {what}: {exc.message}") from None
            raise BackendError(f"Could not create the {what}: {exc.message}") from None

    @staticmethod
    def _tls_env(role: str) -> dict:
        return base.Backend.tls_env(
            role,
            f"{manifests.MOUNT_PATH}/{manifests.CERT_KEY}",
            f"{manifests.MOUNT_PATH}/{manifests.KEY_KEY}",
        )

    # --- checks ---------------------------------------------------------------------------
    async def _health(self, cluster, name: str, what: str) -> tuple[bool, str]:
        watch = self._watch(self._namespace(cluster))
        if not watch.synced.is_set():
            # once per watch: later checks answer at once until its list succeeds
            if watch.waited or not await watch.wait_synced(self.sync_timeout):
                watch.waited = True
                return True, ""  # unknown: keep it
        pod = watch.get(name)
        alive, text = pod_health(pod, f"{what} {name}", watch.warnings_of(name))
        if alive:
            if text:
                self._notes[name] = text
            else:
                self._notes.pop(name, None)
            return True, text
        self._notes.pop(name, None)
        if pod is not None:
            tail = base.tail_summary(await self._pod_log(cluster, name, 5), 5)
            if tail:
                text += f". Last lines of its log: {tail}"
        return False, text

    async def check_clusters(self, clusters) -> list[tuple[bool, str]]:
        return list(
            await asyncio.gather(
                *(self._health(c, c.state.get("pod", ""), "scheduler pod") for c in clusters)
            )
        )

    async def check_workers(self, cluster, workers) -> list[tuple[bool, str]]:
        return list(
            await asyncio.gather(
                *(
                    self._health(cluster, (w.state or {}).get("pod", ""), "worker pod")
                    for w in workers
                )
            )
        )

    async def _pod_log(self, cluster, name: str, lines: int) -> str:
        try:
            return await self.api.pod_log(self._namespace(cluster), name, lines, _LOG_BYTES)
        except KubeError as exc:
            self.log.debug("No log of pod %s: %s", name, exc)
            return ""

    async def log_tail(self, cluster, worker=None, lines: int = 50) -> str:
        """The container's log through the API (what a user's code printed: bounded,
        shown only to the owner and admins), else why the pod is not running yet."""
        state = (cluster.state if worker is None else worker.state) or {}
        name = state.get("pod")
        if not name or self.api is None:
            return ""
        text = await self._pod_log(cluster, name, lines)
        if text.strip():
            return text
        watch = self._watches.get(self._namespace(cluster))
        notes = [self._notes.get(name, "")] + (watch.warnings_of(name) if watch else [])
        return "\n".join(n for n in notes if n)

    async def check_addresses(self, cluster, reported: dict) -> str:
        # A name could resolve elsewhere by the time the proxy connects (the scheduler's
        # owner may control its DNS): only the literal IP the pod listens on will do.
        for field, value in reported.items():
            if not value:
                continue
            try:
                host, _ = split_address(value)
                ipaddress.ip_address(host)
            except ValueError:
                return f"{field} {value}: not an IP address (the scheduler pod listens on its IP)"
        return await super().check_addresses(cluster, reported)

    async def confirm_address(self, cluster, ips, port) -> str:
        # The scheduler pod's IP as the API server knows it, not what the scheduler says.
        name = cluster.state.get("pod", "")
        namespace = self._namespace(cluster)
        watch = self._watch(namespace)
        # The kubelet gives the container its IP before it reports it to the API
        # server, so a quick scheduler's first heartbeat may come first: wait for it.
        deadline = asyncio.get_running_loop().time() + _POD_IP_WAIT
        pod = watch.get(name)
        while not pod_ip(pod) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            pod = watch.get(name)
        if not pod_ip(pod):
            try:
                pod = await self.api.read_pod(namespace, name)
            except KubeError as exc:
                return f"cannot read the scheduler pod: {exc.message}"
        address = pod_ip(pod)
        if not address:
            return "the scheduler pod has no IP yet"
        if ips != {ipaddress.ip_address(address)}:
            return f"not the scheduler pod's IP ({address})"
        if not cluster.config.get("host_network") and port not in (
            SCHEDULER_PORT,
            DASHBOARD_PORT,
            API_PORT,
        ):
            return f"port {port} is not one of the scheduler pod's container ports"
        return ""
