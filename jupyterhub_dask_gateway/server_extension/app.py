"""The server extension's settings, and the environment it gives kernels.

``DaskGatewayExtension`` is a thin ``ExtensionApp``: its traits say where the gateway is
and how to authenticate to it (their defaults come from the environment JupyterHub gives
spawned servers, see ``jupyterhub_dask_gateway.configure_jupyterhub``); at start-up it
exports the ``DASK_GATEWAY__*`` variables kernels need so that ``Gateway()`` works with no
arguments, and it mounts the relay handlers (``handlers``). Talking HTTP to the gateway is
``gateway.GatewayClient``'s job; this module does no I/O.
"""

from __future__ import annotations

import getpass
import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Unicode, default

from .gateway import GatewayClient
from .handlers import default_handlers

# (environment variable, dask config key) pairs kernels get from this extension
KERNEL_ENV_KEYS = {
    "DASK_GATEWAY__ADDRESS": "gateway.address",
    "DASK_GATEWAY__PROXY_ADDRESS": "gateway.proxy-address",
    "DASK_GATEWAY__PUBLIC_ADDRESS": "gateway.public-address",
    "DASK_GATEWAY__AUTH__TYPE": "gateway.auth.type",
}


def _user_dask_config() -> dict:
    """The dask config a user or admin wrote in YAML files (environment excluded).

    Kernels read the same files; a value set there must win over ours, but dask lets
    environment variables override YAML, so we must not export a variable for it.
    """
    try:
        import dask.config
    except ImportError:  # no dask in the server's environment: nothing to respect
        return {}
    return dask.config.collect(paths=dask.config.paths, env={})


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        # dask treats '-' and '_' in keys as the same
        node = node.get(part, node.get(part.replace("-", "_")))
    return node


class DaskGatewayExtension(ExtensionApp):
    """Connects a user's Jupyter server, its kernels and its JupyterLab panel to the gateway.

    Every setting can be given as ``c.DaskGatewayExtension.<name>`` in
    ``jupyter_server_config.py``; under JupyterHub none is needed, because the Hub sets
    ``DASK_GATEWAY__ADDRESS`` (and friends) and ``JUPYTERHUB_API_TOKEN`` in the server's
    environment.
    """

    name = "jupyterhub_dask_gateway"
    description = "Dask Gateway relay and kernel settings for JupyterHub users"

    address = Unicode(
        None,
        allow_none=True,
        help=(
            "URL of the gateway's HTTP API as this server can reach it, e.g. "
            "'http://127.0.0.1:8000/services/dask-gateway'. Default: $DASK_GATEWAY__ADDRESS "
            "(set by configure_jupyterhub), else the public address when the Hub's public URL "
            "($JUPYTERHUB_PUBLIC_HUB_URL) is known. None leaves the relay unconfigured."
        ),
    ).tag(config=True)

    proxy_address = Unicode(
        None,
        allow_none=True,
        help=(
            "host:port (or URL) of the gateway's TCP proxy that kernels connect schedulers "
            "through. Default: $DASK_GATEWAY__PROXY_ADDRESS; None lets the dask-gateway client "
            "derive it from the address."
        ),
    ).tag(config=True)

    public_address = Unicode(
        None,
        allow_none=True,
        help=(
            "Address of the gateway as a browser reaches it (root of dashboard links); may be "
            "a path such as '/services/dask-gateway'. Default: $DASK_GATEWAY__PUBLIC_ADDRESS, "
            "else <$JUPYTERHUB_PUBLIC_HUB_URL without hub/>services/<service_name>, else "
            "<$JUPYTERHUB_BASE_URL>services/<service_name> under a Hub, else the address."
        ),
    ).tag(config=True)

    service_name = Unicode(
        "dask-gateway",
        help="Name of the gateway's JupyterHub service, used to derive the public address.",
    ).tag(config=True)

    auth_type = Unicode(
        help=(
            "How the relay authenticates to the gateway: 'jupyterhub' (the server's Hub API "
            "token), 'basic' (basic_username/basic_password, for a standalone gateway) or "
            "'none'. Default: $DASK_GATEWAY__AUTH__TYPE, else 'jupyterhub'."
        ),
    ).tag(config=True)

    api_token = Unicode(
        help=(
            "JupyterHub API token the relay presents to the gateway as 'Authorization: token "
            "...'. Default: $JUPYTERHUB_API_TOKEN. It never leaves this server."
        ),
    ).tag(config=True)

    basic_username = Unicode(
        help=(
            "User name for auth_type 'basic'. Default: $DASK_GATEWAY__AUTH__KWARGS__USERNAME, "
            "else $JUPYTERHUB_USER, else the OS user."
        ),
    ).tag(config=True)

    basic_password = Unicode(
        help="Password for auth_type 'basic'. Default: $DASK_GATEWAY__AUTH__KWARGS__PASSWORD.",
    ).tag(config=True)

    request_timeout = Float(
        30.0,
        help="Seconds the relay waits for one gateway request before answering 504.",
    ).tag(config=True)

    validate_cert = Bool(
        True,
        help="Verify the gateway's TLS certificate when its address is https.",
    ).tag(config=True)

    set_kernel_env = Bool(
        True,
        help=(
            "Export DASK_GATEWAY__ADDRESS, __PROXY_ADDRESS, __PUBLIC_ADDRESS and __AUTH__TYPE "
            "to kernels and terminals, so Gateway() needs no arguments. A variable already in "
            "the environment, or a value set in the user's dask YAML config, is left alone."
        ),
    ).tag(config=True)

    @default("address")
    def _default_address(self):
        if os.environ.get("DASK_GATEWAY__ADDRESS"):
            return os.environ["DASK_GATEWAY__ADDRESS"]
        public = self._hub_public_service_url()
        return public or None

    @default("proxy_address")
    def _default_proxy_address(self):
        return os.environ.get("DASK_GATEWAY__PROXY_ADDRESS") or None

    @default("public_address")
    def _default_public_address(self):
        if os.environ.get("DASK_GATEWAY__PUBLIC_ADDRESS"):
            return os.environ["DASK_GATEWAY__PUBLIC_ADDRESS"]
        public = self._hub_public_service_url()
        if public:
            return public
        if "JUPYTERHUB_BASE_URL" in os.environ:
            # Same origin as the page: the Hub's proxy routes /services/<name>/ to the gateway.
            base = os.environ["JUPYTERHUB_BASE_URL"] or "/"
            return f"{base.rstrip('/')}/services/{self.service_name}"
        return self.address

    @default("auth_type")
    def _default_auth_type(self):
        return (os.environ.get("DASK_GATEWAY__AUTH__TYPE") or "jupyterhub").lower()

    @default("api_token")
    def _default_api_token(self):
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("basic_username")
    def _default_basic_username(self):
        return (
            os.environ.get("DASK_GATEWAY__AUTH__KWARGS__USERNAME")
            or os.environ.get("JUPYTERHUB_USER")
            or getpass.getuser()
        )

    @default("basic_password")
    def _default_basic_password(self):
        return os.environ.get("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", "")

    def _hub_public_service_url(self) -> str | None:
        """The gateway's absolute public URL, when the Hub told us its own public URL."""
        hub = os.environ.get("JUPYTERHUB_PUBLIC_HUB_URL", "")
        if not hub:
            return None
        root = hub.rstrip("/")
        if root.endswith("/hub"):
            root = root[: -len("/hub")]
        return f"{root}/services/{self.service_name}"

    @property
    def under_hub(self) -> bool:
        """True when JupyterHub spawned this server (it always passes an API token)."""
        return bool(self.api_token)

    def kernel_env(self) -> dict[str, str]:
        """The DASK_GATEWAY__* variables to export, minus those a user or admin already set."""
        wanted = {
            "DASK_GATEWAY__ADDRESS": self.address,
            "DASK_GATEWAY__PROXY_ADDRESS": self.proxy_address,
            "DASK_GATEWAY__PUBLIC_ADDRESS": self.public_address,
            # Only the Hub flavour: the client's JupyterHubAuth reads JUPYTERHUB_API_TOKEN
            # itself, while a basic password would have to be copied into the environment.
            "DASK_GATEWAY__AUTH__TYPE": (
                "jupyterhub" if self.auth_type == "jupyterhub" and self.api_token else None
            ),
        }
        if not self.address:
            # Half a configuration (an auth type, no address) would only confuse Gateway().
            return {}
        user_config = _user_dask_config()
        return {
            var: value
            for var, value in wanted.items()
            if value
            and var not in os.environ
            and _lookup(user_config, KERNEL_ENV_KEYS[var]) is None
        }

    def initialize_settings(self):
        if self.set_kernel_env:
            exported = self.kernel_env()
            # Kernels and terminals inherit the server's environment (a kernel spec's own
            # env still wins), so this is the one place that reaches all of them.
            os.environ.update(exported)
            if exported:
                self.log.info("Dask Gateway settings for kernels: %s", ", ".join(sorted(exported)))
        self.gateway = GatewayClient(
            address=self.address,
            auth_type=self.auth_type,
            api_token=self.api_token,
            basic_username=self.basic_username,
            basic_password=self.basic_password,
            public_address=self.public_address,
            timeout=self.request_timeout,
            validate_cert=self.validate_cert,
            under_hub=self.under_hub,
        )
        if not self.address:
            self.log.info("No Dask Gateway address (DASK_GATEWAY__ADDRESS); the panel will say so")

    def initialize_handlers(self):
        self.handlers.extend(default_handlers)
