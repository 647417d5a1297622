"""JupyterHub integration: one call in ``jupyterhub_config.py``, and Hub OAuth for browsers.

``configure_jupyterhub(c, ...)`` is evaluated twice: by the Hub, where it adds the
managed service, scopes, roles and the environment of spawned servers; and by the
gateway service itself (which loads the same file), where it only applies the
gateway settings. Everything it adds is *added*: what the admin already set in
the file is kept.

The manual equivalent, for admins who prefer to write it out, is in
``docs/jupyterhub.md``.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from urllib.parse import urlparse, urlunparse

from tornado.httputil import url_concat

from .addresses import join_hostport, split_hostport

ADMIN_SCOPE_TEMPLATE = "custom:{name}:admin"
SERVER_ROLE_DEFAULT_SCOPES = ["users:activity!user", "access:servers!server"]
SERVICE_ROLE_SCOPES = [
    "list:users",
    "read:users",
    "list:groups",
    "read:groups",
    "read:servers",
    # Which roles users and groups hold: who still has the access scope (hub_watch.py).
    "read:roles:users",
    "read:roles:groups",
]


def _caller_config_file() -> str | None:
    """The config file being executed (traitlets sets ``__file__`` when it runs one)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for frame_info in inspect.stack()[1:]:
        path = frame_info.frame.f_globals.get("__file__")
        if path and not os.path.abspath(path).startswith(here):
            return os.path.abspath(path)
    return None


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple, set)) else []


def _as_dict(value) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def configure_jupyterhub(
    c,
    name: str = "dask-gateway",
    url: str = "http://127.0.0.1:8765",
    proxy_address: str = "127.0.0.1:8786",
    public_proxy_address: str | None = None,
    hub_public_url: str | None = None,
    config_file: str | None = None,
    notebook_hub_url: str | None = None,
    **settings,
):
    """Add the gateway to a JupyterHub as a managed service.

    Parameters
    ----------
    c : traitlets Config
        The ``c`` of ``jupyterhub_config.py``.
    name : str
        Service name (URL ``/services/<name>/``, scope ``access:services!service=<name>``).
    url : str
        Loopback URL the service binds (explicit port; the Hub proxies to it).
    proxy_address : str
        ``host:port`` of the gateway's TCP proxy for scheduler traffic.
    public_proxy_address : str, optional
        How notebooks reach that proxy, if not ``proxy_address`` (whose all-interfaces
        host, ``0.0.0.0`` or ``::``, notebooks reach as ``127.0.0.1``).
    hub_public_url : str, optional
        The Hub's public URL, for dashboard links and, unless ``notebook_hub_url`` is
        given, for notebooks. Default: what the Hub itself uses (see ``hub_urls``).
    config_file : str, optional
        This file's path (found automatically when called from the config file).
    notebook_hub_url : str, optional
        The Hub's URL as notebooks reach it, when that is not the public URL (notebooks
        in containers or on other hosts reaching the Hub's proxy by an internal name).
        Notebooks call the gateway at ``<notebook_hub_url>/services/<name>``.
    **settings
        ``DaskGateway`` settings, e.g. ``backend_class="slurm"``.
    """
    for key, value in settings.items():
        setattr(c.DaskGateway, key, value)
    c.DaskGateway.proxy_address = proxy_address
    # Every user may use the gateway (the default user role): the Hub grants it, and the
    # gateway reads it to know that nobody can lose it (hub_watch.access_roles).
    access_scope = f"access:services!service={name}"
    extra = c.JupyterHub.get("extra_user_scopes")
    extra = set(extra) if isinstance(extra, (set, list, tuple)) else set()
    c.JupyterHub.extra_user_scopes = extra | {access_scope}
    if os.environ.get("JHDG_LOADING_CONFIG"):
        return  # inside the gateway service: the Hub parts below are not ours to set

    config_file = config_file or _caller_config_file()
    if not config_file:
        raise ValueError("configure_jupyterhub could not find the config file; pass config_file=")
    admin_scope = ADMIN_SCOPE_TEMPLATE.format(name=name)

    service = {
        "name": name,
        "url": url,
        "command": [sys.executable, "-m", "jupyterhub_dask_gateway.app", "--config", config_file],
        "cwd": os.getcwd(),  # run where the Hub runs, so relative paths mean the same
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [admin_scope],
        "display": True,
        "info": {"kind": "dask-gateway", "proxy_address": proxy_address},
        "environment": _service_environment(),
    }
    services = [s for s in _as_list(c.JupyterHub.services) if s.get("name") != name]
    c.JupyterHub.services = services + [service]

    custom = _as_dict(c.JupyterHub.custom_scopes)
    custom.setdefault(admin_scope, {"description": "Manage every user's Dask clusters"})
    c.JupyterHub.custom_scopes = custom

    roles = [r for r in _as_list(c.JupyterHub.load_roles) if r.get("name") != f"{name}-service"]
    roles.append({"name": f"{name}-service", "services": [name], "scopes": SERVICE_ROLE_SCOPES})
    c.JupyterHub.load_roles = roles

    token_scopes = c.Spawner.server_token_scopes
    if not isinstance(token_scopes, (list, tuple)):
        token_scopes = list(SERVER_ROLE_DEFAULT_SCOPES)
    c.Spawner.server_token_scopes = list(dict.fromkeys([*token_scopes, access_scope, admin_scope]))

    for given in (hub_public_url, notebook_hub_url):
        if given and "://" not in given:
            raise ValueError(f"write the scheme of {given!r}: http://... or https://...")
    gateway_url = functools.partial(
        _gateway_url, name=name, hub_public_url=hub_public_url, notebook_hub_url=notebook_hub_url
    )
    env = _as_dict(c.Spawner.environment)
    for key, value in {
        "DASK_GATEWAY__ADDRESS": _SpawnTimeValue(c, gateway_url),
        "DASK_GATEWAY__PUBLIC_ADDRESS": _SpawnTimeValue(
            c, functools.partial(gateway_url, public=True)
        ),
        "DASK_GATEWAY__PROXY_ADDRESS": _notebook_proxy_address(
            public_proxy_address or proxy_address
        ),
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }.items():
        env.setdefault(key, value)
    c.Spawner.environment = env
    # A spawner subclass's own ``environment`` (zero-to-jupyterhub always sets
    # c.KubeSpawner.environment) replaces the base class's: add ours there too.
    for section in [k for k in c if k.endswith("Spawner") and k != "Spawner"]:
        own = c[section].get("environment")
        if isinstance(own, dict):
            c[section].environment = {
                **{k: v for k, v in env.items() if k.startswith("DASK_GATEWAY__")},
                **own,
            }


def _service_environment() -> dict:
    """What of the Hub's environment the gateway service gets (JupyterHub passes a
    managed service almost nothing): its home and state directory, and the service
    addresses Kubernetes puts in every pod's environment (``KUBERNETES_SERVICE_HOST``
    for in-cluster API access; zero-to-jupyterhub's config file, which the gateway
    loads too, reads ``HUB_SERVICE_PORT`` and the like). Nothing else: the Hub's
    environment holds its secrets."""
    keep = ("HOME", "JHDG_STATE_DIR", "POD_NAMESPACE", "HELM_RELEASE_NAME")
    return {
        k: v
        for k, v in os.environ.items()
        if k in keep
        or k.endswith(("_SERVICE_HOST", "_SERVICE_PORT"))
        or k.startswith("KUBERNETES_SERVICE_")
    }


# --- the addresses notebooks use ------------------------------------------------------------

_ALL_INTERFACES = ("", "0.0.0.0", "::")


def hub_urls(hub, hub_public_url=None, notebook_hub_url=None) -> tuple[str, str]:
    """The Hub's public URL and the URL notebooks reach it at, without a trailing slash.

    ``hub`` is the ``JupyterHub`` section of the Hub's config. The public URL is the
    first of: ``hub_public_url``; ``c.JupyterHub.public_url``; ``subdomain_host``; the
    address the Hub's proxy binds, as JupyterHub works it out (``ip``, ``port`` and
    ``base_url``, when any is set, override the parts of ``bind_url``, default
    ``http://:8000``), with an all-interfaces host reached as ``127.0.0.1`` (or as the
    host ``bind_url`` names, which the Hub then listens on too). Notebooks use
    ``notebook_hub_url`` if given, else the public URL. A URL without a path gets the
    Hub's ``base_url``, as JupyterHub does for ``public_url``.
    """
    base = _setting(hub, "base_url")
    if base is None:
        base = urlparse(_setting(hub, "bind_url") or "").path
    base = "/" + base.strip("/") + "/" if base.strip("/") else "/"
    public = (
        _with_base(hub_public_url, base)
        or _with_base(_setting(hub, "public_url"), base)
        or _with_base(_setting(hub, "subdomain_host"), base)
        or _proxy_url(hub, base)
    )
    return public, _with_base(notebook_hub_url, base) or public


def _setting(section, key) -> str | None:
    """``section[key]`` if the file set it, as text. Never ``section.key``: reading an
    unset key that way stores a placeholder in the config, which then counts as set."""
    from traitlets.config import LazyConfigValue

    value = section.get(key) if section else None
    return None if value is None or isinstance(value, LazyConfigValue) else str(value)


def _with_base(url, base) -> str | None:
    if not url:
        return None
    if "://" not in url:
        url = "https://" + url  # as JupyterHub does for public_url and subdomain_host
    parts = urlparse(url)
    path = parts.path if parts.path.strip("/") else base
    return urlunparse(parts._replace(path=path)).rstrip("/")


def _proxy_url(hub, base) -> str:
    """Where the Hub's proxy listens, as a URL notebooks on the Hub's host can use."""
    bind = urlparse(_setting(hub, "bind_url") or "http://:8000")
    if bind.scheme.endswith("+unix"):
        host, port = "127.0.0.1", 8000  # a socket notebooks cannot use: set hub_public_url
    elif any(_setting(hub, key) is not None for key in ("ip", "port", "base_url")):
        # JupyterHub rebuilds bind_url from these (ip default "", port default 8000)
        host, port = _setting(hub, "ip") or "", int(_setting(hub, "port") or 8000)
        if host in _ALL_INTERFACES and bind.hostname not in (None, *_ALL_INTERFACES):
            host = bind.hostname
    else:
        host, port = bind.hostname or "", bind.port
    if host in _ALL_INTERFACES:
        host = "127.0.0.1"
    scheme = "https" if _setting(hub, "ssl_cert") else "http"
    netloc = join_hostport(host, port) if port else (f"[{host}]" if ":" in host else host)
    return f"{scheme}://{netloc}{base}".rstrip("/")


def _gateway_url(config, name, hub_public_url=None, notebook_hub_url=None, public=False) -> str:
    """The gateway's URL for notebooks (or, ``public``, for dashboard links)."""
    urls = hub_urls(config.get("JupyterHub"), hub_public_url, notebook_hub_url)
    return f"{urls[0] if public else urls[1]}/services/{name}"


def _notebook_proxy_address(address: str) -> str:
    host, port = split_hostport(address)
    return f"gateway://{join_hostport('127.0.0.1' if host in _ALL_INTERFACES else host, port)}"


class _SpawnTimeValue(str):
    """A ``c.Spawner.environment`` value, worked out again each time a server spawns.

    As a string it is what the settings made so far give. JupyterHub calls callable
    values of ``Spawner.environment`` with the spawner, whose config then holds the
    whole file and the command line: Hub settings made after ``configure_jupyterhub``
    count too, wherever the call sits in the file.
    """

    def __new__(cls, config, compute):
        self = super().__new__(cls, compute(config))
        self._compute = compute
        return self

    def __call__(self, spawner) -> str:
        try:
            return self._compute(spawner.config)
        except Exception:
            spawner.log.warning(
                "Could not work out the gateway's address; using %s", self, exc_info=True
            )
            return str(self)

    def __deepcopy__(self, memo):
        return self  # immutable; traitlets deep-copies config values


# --- inside the service: Hub OAuth for browsers ------------------------------------------


def make_hub_auth(authenticator):
    """The ``HubOAuth`` object that checks tokens and runs the browser login."""
    from jupyterhub.services.auth import HubOAuth

    return HubOAuth(cache_max_age=int(authenticator.cache_max_age), log=authenticator.log)


def login_url(auth, handler) -> str:
    """Start the OAuth dance for ``handler``'s page (state cookie, PKCE)."""
    params = {}
    verifier = None
    if getattr(auth, "pkce_enabled", False):
        verifier, challenge, method = auth.generate_pkce_code_challenge()
        params.update(code_challenge=challenge, code_challenge_method=method)
    params["state"] = auth.set_state_cookie(
        handler, next_url=handler.request.uri, code_verifier=verifier
    )
    return url_concat(auth.login_url, params)


def oauth_callback_handler(auth):
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    # The callback must use the same HubOAuth object that started the login:
    # OAuth state and PKCE verifiers live in its memory.
    class CallbackHandler(HubOAuthCallbackHandler):
        _hub_auth = auth

    return CallbackHandler
