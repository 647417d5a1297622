"""``KubeClusterConfig``: the per-cluster settings of the Kubernetes backend.

The names are dask-gateway's ``KubeClusterConfig`` names wherever the concept is
the same, so the options handlers of daskhub-style deployments port over. Every
field may be set per cluster by the options handler, as with every backend.
"""

from __future__ import annotations

from traitlets import Bool, Dict, Float, List, Unicode, default, validate

from ..base import ClusterConfig, MemoryLimit

#: Container ports on the pod network (``host_network`` pods choose free ports).
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
API_PORT = 8788


class KubeClusterConfig(ClusterConfig):
    """Per-cluster settings of ``KubeBackend`` (``c.KubeClusterConfig.*``)."""

    # Pods request CPU in fractions (Kubernetes' millicores), as in dask-gateway.
    worker_cores = Float(
        1, min=0.001, help="CPU requested per worker pod (its thread count: at least 1)."
    ).tag(config=True)
    scheduler_cores = Float(1, min=0.001, help="CPU requested for the scheduler pod.").tag(
        config=True
    )

    def to_dict(self) -> dict:
        out = super().to_dict()
        if not self.worker_threads:
            out["worker_threads"] = max(1, int(self.worker_cores))
        return out

    @default("python")
    def _default_python(self):
        # the interpreter on the image's PATH, not the gateway's own
        return "python"

    namespace = Unicode(
        help="""Namespace of the cluster's pods and Secret. May contain ``{username}``
        (a namespace per user, made label-safe). Default: the gateway pod's own
        namespace, else the kubeconfig context's, else "default".""",
    ).tag(config=True)

    image = Unicode(
        help="""Image of the scheduler and worker containers (required). It must hold
        jupyterhub-dask-gateway (the scheduler imports its preload) and the same dask
        and distributed as the notebooks; the notebook image itself usually does.""",
    ).tag(config=True)

    image_pull_policy = Unicode(
        None,
        allow_none=True,
        help='"Always", "IfNotPresent", "Never"; None leaves Kubernetes\' default.',
    ).tag(config=True)

    @validate("image_pull_policy")
    def _check_pull_policy(self, proposal):
        value = proposal["value"]
        if value not in (None, "Always", "IfNotPresent", "Never"):
            raise ValueError(f"image_pull_policy must be Always, IfNotPresent or Never: {value!r}")
        return value

    image_pull_secrets = List(
        Dict(), help='Image pull secrets of the pods, e.g. ``[{"name": "my-registry"}]``.'
    ).tag(config=True)

    scheduler_extra_container_config = Dict(
        help="Merged into the scheduler's container spec (camelCase fields; lists appended)."
    ).tag(config=True)
    scheduler_extra_pod_config = Dict(
        help="Merged into the scheduler's pod spec, e.g. ``nodeSelector`` (lists appended)."
    ).tag(config=True)
    worker_extra_container_config = Dict(
        help="Merged into each worker's container spec (camelCase fields; lists appended)."
    ).tag(config=True)
    worker_extra_pod_config = Dict(
        help="Merged into each worker's pod spec, e.g. ``tolerations`` (lists appended)."
    ).tag(config=True)
    scheduler_extra_pod_labels = Dict(Unicode(), help="Extra labels of the scheduler pod.").tag(
        config=True
    )
    scheduler_extra_pod_annotations = Dict(
        Unicode(), help="Extra annotations of the scheduler pod."
    ).tag(config=True)
    worker_extra_pod_labels = Dict(Unicode(), help="Extra labels of the worker pods.").tag(
        config=True
    )
    worker_extra_pod_annotations = Dict(
        Unicode(), help="Extra annotations of the worker pods."
    ).tag(config=True)

    worker_cores_limit = Float(
        None, allow_none=True, min=0, help="CPU limit of a worker pod (default: worker_cores)."
    ).tag(config=True)
    worker_memory_limit = MemoryLimit(
        None, allow_none=True, help="Memory limit of a worker pod (default: worker_memory)."
    ).tag(config=True)
    scheduler_cores_limit = Float(
        None, allow_none=True, min=0, help="CPU limit of the scheduler pod (default: its cores)."
    ).tag(config=True)
    scheduler_memory_limit = MemoryLimit(
        None, allow_none=True, help="Memory limit of the scheduler pod (default: its memory)."
    ).tag(config=True)

    host_network = Bool(
        False,
        help="""Run the pods in the node's network namespace (``hostNetwork``): for
        clusters without a pod network. Ports are then chosen free at start instead of
        the fixed container ports 8786 (scheduler), 8787 (dashboard), 8788 (control).""",
    ).tag(config=True)
