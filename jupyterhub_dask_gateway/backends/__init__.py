"""Cluster backends: traitlets plugins chosen by short entry-point name."""

from .base import Backend, ClusterConfig, load_backend_class

__all__ = ["Backend", "ClusterConfig", "load_backend_class"]
