"""jupyterhub-dask-gateway: a secure, multi-tenant Dask Gateway built into JupyterHub."""

from ._version import __version__

__all__ = ["__version__", "configure_jupyterhub"]


def configure_jupyterhub(c, *args, **kwargs):
    """Add the gateway to a ``jupyterhub_config.py``; see ``jupyterhub_dask_gateway.hub``."""
    from .hub import configure_jupyterhub as _configure

    return _configure(c, *args, **kwargs)
