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

import inspect
import os
import sys

from tornado.httputil import url_concat

ADMIN_SCOPE_TEMPLATE = "custom:{name}:admin"
SERVER_ROLE_DEFAULT_SCOPES = ["users:activity!user", "access:servers!server"]
SERVICE_ROLE_SCOPES = ["list:users", "read:users", "list:groups", "read:groups"]


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
        How notebooks reach that proxy, if not ``proxy_address``.
    hub_public_url : str, optional
        The Hub's public URL (default from ``c.JupyterHub.bind_url`` and ``base_url``,
        else ``http://127.0.0.1:8000``); notebooks and dashboards use it.
    config_file : str, optional
        This file's path (found automatically when called from the config file).
    **settings
        ``DaskGateway`` settings, e.g. ``backend_class="slurm"``.
    """
    for key, value in settings.items():
        setattr(c.DaskGateway, key, value)
    c.DaskGateway.proxy_address = proxy_address
    if os.environ.get("JHDG_LOADING_CONFIG"):
        return  # inside the gateway service: the Hub parts below are not ours to set

    config_file = config_file or _caller_config_file()
    if not config_file:
        raise ValueError("configure_jupyterhub could not find the config file; pass config_file=")
    admin_scope = ADMIN_SCOPE_TEMPLATE.format(name=name)
    access_scope = f"access:services!service={name}"

    service = {
        "name": name,
        "url": url,
        "command": [sys.executable, "-m", "jupyterhub_dask_gateway.app", "--config", config_file],
        "cwd": os.getcwd(),  # run where the Hub runs, so relative paths mean the same
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [admin_scope],
        "display": True,
        "info": {"kind": "dask-gateway", "proxy_address": proxy_address},
        "environment": {k: os.environ[k] for k in ("HOME", "JHDG_STATE_DIR") if k in os.environ},
    }
    services = [s for s in _as_list(c.JupyterHub.services) if s.get("name") != name]
    c.JupyterHub.services = services + [service]

    custom = _as_dict(c.JupyterHub.custom_scopes)
    custom.setdefault(admin_scope, {"description": "Manage every user's Dask clusters"})
    c.JupyterHub.custom_scopes = custom

    roles = [r for r in _as_list(c.JupyterHub.load_roles) if r.get("name") != f"{name}-service"]
    roles.append({"name": f"{name}-service", "services": [name], "scopes": SERVICE_ROLE_SCOPES})
    c.JupyterHub.load_roles = roles

    extra = (
        set(c.JupyterHub.extra_user_scopes)
        if isinstance(c.JupyterHub.extra_user_scopes, (set, list, tuple))
        else set()
    )
    c.JupyterHub.extra_user_scopes = extra | {access_scope}

    token_scopes = c.Spawner.server_token_scopes
    if not isinstance(token_scopes, (list, tuple)):
        token_scopes = list(SERVER_ROLE_DEFAULT_SCOPES)
    c.Spawner.server_token_scopes = list(dict.fromkeys([*token_scopes, access_scope, admin_scope]))

    public = (hub_public_url or _bind_url(c)).rstrip("/")
    gateway_url = f"{public}/services/{name}"
    env = _as_dict(c.Spawner.environment)
    for key, value in {
        "DASK_GATEWAY__ADDRESS": gateway_url,
        "DASK_GATEWAY__PUBLIC_ADDRESS": gateway_url,
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{public_proxy_address or proxy_address}",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }.items():
        env.setdefault(key, value)
    c.Spawner.environment = env


def _bind_url(c) -> str:
    """The Hub's URL from ``bind_url``, with its base URL (services live under it)."""
    from urllib.parse import urlparse

    bind = c.JupyterHub.bind_url
    origin, path = "http://127.0.0.1:8000", ""
    if isinstance(bind, str) and bind:
        u = urlparse(bind)
        host = u.hostname or "127.0.0.1"
        origin, path = f"{u.scheme}://{host}{':' + str(u.port) if u.port else ''}", u.path
    base = c.JupyterHub.base_url
    if isinstance(base, str) and base:
        path = base
    return origin + ("/" + path.strip("/") if path.strip("/") else "")


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
