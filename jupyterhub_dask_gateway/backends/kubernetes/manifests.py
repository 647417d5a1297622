"""The Kubernetes objects of one cluster, as plain dicts (no API calls here).

Per cluster: a Secret (TLS key pair and the cluster's API token) that is the
cluster's root object, the scheduler pod and one pod per worker; the pods are
owned by the Secret, so deleting it garbage-collects the rest. The Secret is
mounted, never copied into environment variables or arguments (both are
readable through the pod's spec by anyone who may read pods).
"""

from __future__ import annotations

import copy
import hashlib
import re

from .config import API_PORT, DASHBOARD_PORT, SCHEDULER_PORT

MANAGED_BY = "jupyterhub-dask-gateway"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "gateway.dask.org/instance"
LABEL_CLUSTER = "gateway.dask.org/cluster"
LABEL_USER = "gateway.dask.org/user"
LABEL_WORKER = "gateway.dask.org/worker"
ANNOTATION_USERNAME = "gateway.dask.org/username"

SCHEDULER = "dask-scheduler"
WORKER = "dask-worker"
CREDENTIALS = "credentials"

MOUNT_PATH = "/etc/dask-gateway"
CERT_KEY, KEY_KEY, TOKEN_KEY = "tls.crt", "tls.key", "api-token"
POD_IP_VAR = "JHDG_POD_IP"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]|[A-Za-z0-9])$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _suffix(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# What an escaped name ends with: a name that already looks like that is escaped too,
# or "bob-example.org--<hash of bob@example.org>" could pass for bob@example.org.
_LABEL_ESCAPED = re.compile(r"--[0-9a-f]{10}$")
_DNS_ESCAPED = re.compile(r"-[0-9a-f]{10}$")


def label_value(text: str) -> str:
    """``text`` as a label value: itself when valid, else a readable part and a hash
    (two different names never share a value)."""
    if _LABEL_VALUE.match(text) and not _LABEL_ESCAPED.search(text):
        return text
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[:40].strip("-_.")
    return f"{readable}--{_suffix(text)}" if readable else f"x--{_suffix(text)}"


def dns_label(text: str) -> str:
    """``text`` as a DNS-1123 label (namespace names): itself when valid, else
    lower-cased with other characters replaced and a hash appended."""
    if _DNS_LABEL.match(text) and not _DNS_ESCAPED.search(text):
        return text
    readable = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return f"{readable}-{_suffix(text)}" if readable else f"x-{_suffix(text)}"


def merge(base, extra):
    """``extra`` merged into a copy of ``base`` as dask-gateway merges its
    ``*_extra_*_config``: dicts key by key, lists appended, anything else replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return [*base, *copy.deepcopy(extra)]
    return copy.deepcopy(extra)


def secret_name(cluster_name: str) -> str:
    return f"dask-credentials-{cluster_name}"


def scheduler_pod_name(cluster_name: str) -> str:
    return f"dask-scheduler-{cluster_name}"


def worker_pod_name(cluster_name: str, worker_name: str) -> str:
    return f"dask-worker-{cluster_name}-{worker_name}"


def cluster_selector(instance: str, cluster_name: str | None = None) -> str:
    """The label selector of everything this gateway instance (and cluster) made."""
    parts = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_INSTANCE}={label_value(instance)}"]
    if cluster_name:
        parts.append(f"{LABEL_CLUSTER}={cluster_name}")
    return ",".join(parts)


def labels(instance: str, cluster, component: str) -> dict:
    return {
        LABEL_NAME: "dask-gateway",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_INSTANCE: label_value(instance),
        LABEL_CLUSTER: cluster.name,
        LABEL_USER: label_value(cluster.username),
    }


def secret(instance: str, cluster, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(cluster.name),
            "namespace": namespace,
            "labels": labels(instance, cluster, CREDENTIALS),
            "annotations": {ANNOTATION_USERNAME: cluster.username},
        },
        "stringData": {
            CERT_KEY: cluster.tls_cert,
            KEY_KEY: cluster.tls_key,
            TOKEN_KEY: cluster.token,
        },
    }


def _quantity_cpu(cores) -> str:
    return f"{int(round(float(cores) * 1000))}m"


def _resources(cfg: dict, role: str) -> dict:
    cores = cfg.get(f"{role}_cores", 1)
    memory = int(cfg.get(f"{role}_memory", 0))
    cores_limit = cfg.get(f"{role}_cores_limit") or cores
    memory_limit = int(cfg.get(f"{role}_memory_limit") or memory)
    out = {"requests": {"cpu": _quantity_cpu(cores)}, "limits": {"cpu": _quantity_cpu(cores_limit)}}
    if memory:
        out["requests"]["memory"] = str(memory)
    if memory_limit:
        out["limits"]["memory"] = str(memory_limit)
    return out


def pod(
    instance: str,
    cluster,
    namespace: str,
    owner_uid: str,
    command: list[str],
    env: dict,
    worker=None,
) -> dict:
    """The scheduler's pod (``worker=None``) or one worker's."""
    cfg = cluster.config
    role = "scheduler" if worker is None else "worker"
    component = SCHEDULER if worker is None else WORKER
    host_network = bool(cfg.get("host_network"))
    pod_labels = {**cfg.get(f"{role}_extra_pod_labels", {}), **labels(instance, cluster, component)}
    if worker is not None:
        pod_labels[LABEL_WORKER] = worker.name
    annotations = {
        **cfg.get(f"{role}_extra_pod_annotations", {}),
        ANNOTATION_USERNAME: cluster.username,
    }
    # the scheduler alone reads the API token; workers see only the key pair
    items = [CERT_KEY, KEY_KEY] + ([TOKEN_KEY] if worker is None else [])
    container = {
        "name": component,
        "image": cfg.get("image", ""),
        "args": command,
        "env": [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
        + [{"name": POD_IP_VAR, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "resources": _resources(cfg, role),
        "volumeMounts": [{"name": "dask-credentials", "mountPath": MOUNT_PATH, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if cfg.get("image_pull_policy"):
        container["imagePullPolicy"] = cfg["image_pull_policy"]
    if worker is None and not host_network:
        container["ports"] = [
            {"name": "tls", "containerPort": SCHEDULER_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "api", "containerPort": API_PORT},
        ]
    container = merge(container, cfg.get(f"{role}_extra_container_config") or {})
    spec = {
        "restartPolicy": "Never",  # the gateway replaces a failed worker itself
        # a user's code has no business with the namespace's service account
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [
            {
                "name": "dask-credentials",
                "secret": {
                    "secretName": secret_name(cluster.name),
                    "items": [{"key": k, "path": k} for k in items],
                },
            }
        ],
    }
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if cfg.get("image_pull_secrets"):
        spec["imagePullSecrets"] = list(cfg["image_pull_secrets"])
    spec = merge(spec, cfg.get(f"{role}_extra_pod_config") or {})
    name = (
        scheduler_pod_name(cluster.name)
        if worker is None
        else worker_pod_name(cluster.name, worker.name)
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "name": secret_name(cluster.name),
                    "uid": owner_uid,
                }
            ],
        },
        "spec": spec,
    }
