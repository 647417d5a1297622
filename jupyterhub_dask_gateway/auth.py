"""Who is calling: pluggable authenticators, chosen by ``DaskGateway.authenticator_class``.

An authenticator turns a request into a ``models.User`` (name, groups, admin) or
``None`` when no credentials were presented, which the handlers answer with 401
and the authenticator's ``WWW-Authenticate`` challenge (the dask-gateway client
only sends credentials after a 401). After a successful full authentication the
base class sets a random session cookie remembered in memory for
``cache_max_age`` seconds, so the client's next requests cost one round trip.

``basic``: HTTP Basic with a shared password (any user name) or a per-user
mapping, for Hub-less use and development. ``kerberos``: SPNEGO with a service
keytab, for sites where users hold tickets (``kerberos.py``). ``jupyterhub``: Hub API tokens in
``Authorization: jupyterhub|token|Bearer <token>``, validated by the Hub (cached
briefly), with the ``access:services!service=<name>`` scope enforced; browsers
use Hub OAuth cookies (see ``hub``).
"""

from __future__ import annotations

import base64
import os
import secrets
import time

from traitlets import Bool, Dict, Float, Set, Unicode, default
from traitlets.config import LoggingConfigurable

from .errors import Forbidden, Unauthorized, Unavailable
from .models import User
from .plugins import load_plugin_class
from .utils import require_coroutines, same_secret

ADMIN_SCOPE = "custom:dask-gateway:admin"


class GatewayAuthenticator(LoggingConfigurable):
    """Base class of the authenticators: every hook the gateway calls is declared here.

    Subclasses must implement ``authenticate_request`` (checked when the class is
    defined) and set ``challenge``; the other hooks have defaults. docs/design.md
    ("Adding an authenticator") walks through writing one.

    Not named ``Authenticator``: the gateway's settings share ``jupyterhub_config.py``
    with the Hub's, and traitlets applies ``c.<ClassName>`` to every class of that name
    in a configurable's ancestry, so the Hub's ``c.Authenticator.admin_users`` would
    silently become the gateway's admins.
    """

    #: A base for other authenticators, exempt from the definition-time check.
    _abstract = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        require_coroutines(cls, GatewayAuthenticator, ("authenticate_request",))

    #: The ``WWW-Authenticate`` value of every 401: the dask-gateway client sends
    #: credentials only after it sees the scheme it was configured with.
    challenge = "Basic"

    cookie_name = Unicode(
        help="Name of the session cookie; random per process by default, so a restart "
        "makes clients re-authenticate once.",
    ).tag(config=True)

    @default("cookie_name")
    def _default_cookie_name(self):
        return f"dask-gateway-{secrets.token_hex(8)}"

    cache_max_age = Float(
        60,
        min=0,
        help="Seconds an authenticated session cookie (and a Hub token check) is trusted "
        "before credentials are checked again; 0 disables the cache.",
    ).tag(config=True)

    admin_users = Set(Unicode(), help="User names with admin rights on every cluster.").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._sessions: dict[str, tuple[float, User]] = {}

    async def authenticate(self, handler) -> User | None:
        session = handler.get_cookie(self.cookie_name)
        if session and self.cache_max_age > 0:
            entry = self._sessions.get(session)
            if entry is not None and time.monotonic() - entry[0] < self.cache_max_age:
                return entry[1]
            self._sessions.pop(session, None)
        user = await self.authenticate_request(handler)
        if user is None:
            return None
        if user.name in self.admin_users:
            user.admin = True
        # Only clients that sent credentials themselves get a session (the client's next
        # requests cost no check); browsers logged in through the Hub have its cookie.
        if self.cache_max_age > 0 and handler.request.headers.get("Authorization"):
            self._start_session(handler, user)
        return user

    def _start_session(self, handler, user: User) -> None:
        self._expire_sessions()
        session = secrets.token_hex(16)
        self._sessions[session] = (time.monotonic(), user)
        proto = handler.request.headers.get("X-Forwarded-Proto", handler.request.protocol)
        handler.set_cookie(
            self.cookie_name,
            session,
            expires_days=None,
            httponly=True,
            max_age=int(self.cache_max_age),
            # Sent back only to the gateway, never to other paths of the origin (users'
            # servers under a Hub), and never with a request another site started.
            path=handler.settings.get("cookie_path", "/"),
            samesite="Strict",
            secure=proto.lower() == "https",
        )

    def explicit_credentials(self, handler) -> bool:
        """Whether the request carries credentials a browser would not add by itself.

        A token in the Authorization header is; cookies are not, and neither is Basic
        (browsers repeat a Basic login on every request to the site).
        """
        scheme = handler.request.headers.get("Authorization", "").partition(" ")[0].lower()
        return scheme in ("jupyterhub", "token", "bearer")

    def check_xsrf_cookie(self, handler) -> None:
        """Raise ``tornado.web.HTTPError(403)`` if a cookie-authenticated request lacks
        the XSRF proof its authenticator requires (the base issues no browser cookies
        other than the SameSite=Strict session, so there is nothing to check)."""

    def _expire_sessions(self):
        if len(self._sessions) < 1024:
            return
        cutoff = time.monotonic() - self.cache_max_age
        self._sessions = {k: v for k, v in self._sessions.items() if v[0] >= cutoff}

    # --- the hooks ----------------------------------------------------------------------
    async def authenticate_request(self, handler) -> User | None:
        """The caller of ``handler``'s request, from credentials the request carries.

        ``None`` when it carries none (the handler answers 401 with ``challenge``);
        raise ``Unauthorized`` for bad credentials, ``Forbidden`` for a known caller
        who may not use the gateway, ``Unavailable`` when the identity provider
        cannot be reached. Never block the event loop.
        """
        raise NotImplementedError

    def login_url(self, handler) -> str | None:
        """Where to send a browser that opened a page (a dashboard) without credentials,
        or ``None`` to answer 401 (the default)."""
        return None

    def extra_handlers(self, prefix: str) -> list:
        """Tornado routes the authenticator serves under ``prefix`` (an OAuth callback)."""
        return []

    async def setup(self) -> None:
        """Called once at startup; raise ``StartupError`` to refuse to start."""

    async def cleanup(self) -> None:
        """Called once when the gateway stops."""


class BasicAuthenticator(GatewayAuthenticator):
    """HTTP Basic: per-user ``passwords``, or any other name with the shared ``password``
    (except admins and users with groups, who need their own entry)."""

    challenge = 'Basic realm="dask-gateway"'

    password = Unicode(
        None,
        allow_none=True,
        help="Shared password for every user name (env JHDG_BASIC_PASSWORD). "
        "If neither this nor `passwords` is set, every login is refused.",
    ).tag(config=True)

    @default("password")
    def _default_password(self):
        return os.environ.get("JHDG_BASIC_PASSWORD")

    passwords = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="Per-user passwords {user: password}; these users must use theirs. Admins "
        "(admin_users) and users with groups (user_groups) can only log in with an entry "
        "here, never with the shared password.",
    ).tag(config=True)

    user_groups = Dict(
        help="Groups of each user {user: [group, ...]}, for sharing clusters without a Hub.",
    ).tag(config=True)

    def _privileged(self, username: str) -> bool:
        """Admins and users with groups never log in with the shared password: anyone who
        knows it could otherwise take their name, and with it every cluster they may see."""
        return username in self.admin_users or username in self.user_groups

    async def authenticate_request(self, handler):
        header = handler.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme != "Basic" or not value:
            return None
        try:
            username, _, password = base64.b64decode(value.strip()).decode("latin1").partition(":")
        except ValueError:
            raise Unauthorized("Malformed Basic credentials") from None
        if not username:
            raise Unauthorized("User name required")
        expected = self.passwords.get(username)
        if expected is None and not self._privileged(username):
            expected = self.password
        if expected is None or not same_secret(password, expected):
            raise Unauthorized("Invalid credentials")
        return User(username, frozenset(self.user_groups.get(username, ())), False)


class JupyterHubAuthenticator(GatewayAuthenticator):
    """Hub API tokens (``jupyterhub``, ``token`` or ``Bearer`` scheme) and Hub OAuth cookies."""

    challenge = "jupyterhub"

    service_name = Unicode(
        help="This service's name in the Hub (env JUPYTERHUB_SERVICE_NAME); tokens need "
        "the access:services!service=<name> scope.",
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self):
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", "")

    enforce_access_scope = Bool(
        True,
        help="Require the access:services!service=<name> scope (strongly recommended: "
        "without it any Hub token works).",
    ).tag(config=True)

    admin_scope = Unicode(
        help="Hub scope that grants admin rights on every cluster (default "
        "custom:<service_name>:admin, the scope configure_jupyterhub defines).",
    ).tag(config=True)

    @default("admin_scope")
    def _default_admin_scope(self):
        return f"custom:{self.service_name}:admin" if self.service_name else ADMIN_SCOPE

    @default("cache_max_age")
    def _default_cache_max_age(self):
        return 30.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hub_auth = None
        self._admin_cache: dict[str, tuple[float, bool]] = {}

    async def _complete_model(self, model: dict) -> dict:
        """Notebook tokens don't carry the admin flag; ask the Hub with our own token."""
        if "admin" in model or model.get("kind", "user") != "user":
            return model
        name = model["name"]
        cached = self._admin_cache.get(name)
        if cached and time.monotonic() - cached[0] < max(self.cache_max_age, 1):
            return {**model, "admin": cached[1]}
        from tornado.escape import json_decode, url_escape
        from tornado.httpclient import AsyncHTTPClient

        admin = False
        try:
            resp = await AsyncHTTPClient().fetch(
                f"{self.hub_auth.api_url}/users/{url_escape(name, plus=False)}",
                headers={"Authorization": f"token {self.hub_auth.api_token}"},
                request_timeout=10,
            )
            admin = bool(json_decode(resp.body).get("admin"))
        except Exception as exc:
            self.log.warning("Could not read the admin flag of %s from the Hub: %s", name, exc)
        self._admin_cache[name] = (time.monotonic(), admin)
        return {**model, "admin": admin}

    async def setup(self):
        from .hub import make_hub_auth

        self.hub_auth = make_hub_auth(self)

    def login_url(self, handler):
        from .hub import login_url

        return login_url(self.hub_auth, handler)

    def extra_handlers(self, prefix):
        from .hub import oauth_callback_handler

        return [(prefix + "oauth_callback", oauth_callback_handler(self.hub_auth))]

    def check_xsrf_cookie(self, handler):
        # The Hub's own rules for its OAuth cookie: page views and websockets pass, any
        # other cookie request (a form posted from another site, a page's fetch) needs
        # the Hub's _xsrf token.
        self.hub_auth.check_xsrf_cookie(handler)

    def user_from_model(self, model: dict) -> User:
        from jupyterhub.services.auth import check_scopes

        scopes = set(model.get("scopes") or ())
        if self.enforce_access_scope and self.service_name:
            needed = {"access:services", f"access:services!service={self.service_name}"}
            if not scopes & needed:
                raise Forbidden(
                    f"This token lacks the access:services!service={self.service_name} scope"
                )
        name = model["name"]
        kind = model.get("kind", "user")
        if kind != "user":
            name = f"{kind}:{name}"
        admin = bool(model.get("admin")) or bool(check_scopes({self.admin_scope}, scopes))
        return User(name, frozenset(model.get("groups") or ()), admin, frozenset(scopes))

    async def authenticate_request(self, handler):
        header = handler.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() in ("jupyterhub", "token", "bearer") and token:
            if not token.isascii() or len(token) > 4096:
                raise Unauthorized("Invalid or expired JupyterHub token")
            try:
                model = await self.hub_auth.user_for_token(token, sync=False)
            except Exception as exc:
                self.log.warning("Hub token check failed: %s", exc)
                raise Unavailable("Could not verify the token with JupyterHub") from None
            if model is None:
                raise Unauthorized("Invalid or expired JupyterHub token")
            return self.user_from_model(await self._complete_model(model))
        if header:
            return None
        # Browsers: the Hub OAuth cookie set by our oauth_callback.
        model = await self.hub_auth.get_user(handler, sync=False)
        return self.user_from_model(await self._complete_model(model)) if model else None


# The dask-gateway-server classes admins migrate from, and ours that do the same job.
DASK_GATEWAY_NAMES = {
    "dask_gateway_server.auth.SimpleAuthenticator": "basic",
    "dask_gateway_server.auth.JupyterHubAuthenticator": "jupyterhub",
    "dask_gateway_server.auth.KerberosAuthenticator": "kerberos",
}


def load_authenticator_class(name: str) -> type[GatewayAuthenticator]:
    """An entry-point name (``basic``, ``jupyterhub``, ``kerberos``), a
    dask-gateway-server class path, or an import string."""
    return load_plugin_class(
        name,
        group="jupyterhub_dask_gateway.authenticators",
        builtin={
            "basic": "jupyterhub_dask_gateway.auth.BasicAuthenticator",
            "jupyterhub": "jupyterhub_dask_gateway.auth.JupyterHubAuthenticator",
            "kerberos": "jupyterhub_dask_gateway.kerberos.GatewayKerberosAuthenticator",
        },
        aliases=DASK_GATEWAY_NAMES,
        base=GatewayAuthenticator,
    )
