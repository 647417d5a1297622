"""The notebook side of jupyterhub-dask-gateway, loaded into every user's Jupyter server.

Two halves ship together: a Jupyter server extension (``app.DaskGatewayExtension``) that
makes ``Gateway()`` work with no arguments in kernels and relays the JupyterLab panel's
requests to the gateway, and the prebuilt JupyterLab extension (``labextension/``, built
from the repository's ``labextension/`` sources) that draws the panel. Jupyter enables it
by this module's name (``etc/jupyter-config.json``, installed into
``jupyter_server_config.d``). The gateway service is the rest of ``jupyterhub_dask_gateway``,
none of which is imported here; nothing here holds state of its own.
"""

from importlib.metadata import PackageNotFoundError, version

from .app import DaskGatewayExtension

try:
    __version__ = version("jupyterhub-dask-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["DaskGatewayExtension", "__version__"]


def _jupyter_server_extension_points():
    """Tell jupyter_server which ExtensionApp this package provides."""
    return [{"module": __name__, "app": DaskGatewayExtension}]


def _jupyter_labextension_paths():
    """Tell JupyterLab where the prebuilt panel lives (used by ``jupyter labextension``)."""
    return [{"src": "labextension", "dest": "jupyterhub-dask-gateway"}]
