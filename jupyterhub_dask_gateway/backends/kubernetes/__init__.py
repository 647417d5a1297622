"""The Kubernetes backend (``c.DaskGateway.backend_class = "kubernetes"``).

``backend`` holds the contract's implementation, ``manifests`` the objects it
creates, ``watch`` the namespace watches every check reads, ``pods`` what a pod's
status means, ``client`` the calls to the API server, ``config`` the per-cluster
settings. docs/kubernetes.md is the operator's guide.
"""

from .backend import KubeBackend
from .config import KubeClusterConfig

__all__ = ["KubeBackend", "KubeClusterConfig"]
