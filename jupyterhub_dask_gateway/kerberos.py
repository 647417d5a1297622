"""Kerberos (SPNEGO, ``Authorization: Negotiate``) for standalone gateways at HPC sites.

Users hold a ticket from ``kinit``; the unmodified client sends it with
``Gateway(auth="kerberos")`` after the 401's ``WWW-Authenticate: Negotiate``
challenge. The gateway accepts it with its service key from a keytab, answers the
mutual-authentication token in the reply's ``WWW-Authenticate`` header, and then
issues the session cookie as the other authenticators do.

The GSSAPI binding is python-gssapi (``pip install jupyterhub-dask-gateway[kerberos]``):
maintained, complete (credential stores, so the keytab is ours and not the process's
``KRB5_KTNAME``; names and their realms), and built on the system's MIT or Heimdal
library. Its calls block (they may read the keytab and the replay cache), so they run
in a thread, never on the event loop.

Principals map to users: ``alice@REALM`` is ``alice`` when ``REALM`` is the gateway's
realm; principals of other realms are refused unless ``foreign_realms = "keep"``
(then the user is ``alice@OTHER``); ``principal_to_user`` replaces the rule. Groups
come from the system account database, so sharing and per-user accounts work as
with Basic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import grp
import hashlib
import os
import pwd
import stat
import time

from traitlets import Callable, Enum, Set, Unicode, default

from .auth import GatewayAuthenticator
from .errors import Forbidden, StartupError, Unauthorized
from .models import User

# How long an accepted token is remembered to refuse its replay: authenticators are
# valid within the clock skew (5 minutes by default) on either side of now.
REPLAY_WINDOW = 600


class GatewayKerberosAuthenticator(GatewayAuthenticator):
    """SPNEGO/Negotiate with a service keytab.

    Not named ``KerberosAuthenticator`` like dask-gateway-server's: that is also the name
    of the Hub's Kerberos login (jupyterhub-kerberosauthenticator), whose
    ``c.KerberosAuthenticator.keytab`` in a shared ``jupyterhub_config.py`` would then
    configure the gateway too.
    """

    challenge = "Negotiate"

    keytab = Unicode(
        help="""Path of the keytab with the gateway's service key (``HTTP/<host>@REALM``),
        readable by the gateway only (mode 0600). Default: ``KRB5_KTNAME``, else
        ``/etc/krb5.keytab``. The gateway refuses to start if it is missing, unreadable,
        readable by other accounts, or holds no key for ``service_name``.""",
    ).tag(config=True)

    @default("keytab")
    def _default_keytab(self):
        name = os.environ.get("KRB5_KTNAME", "")
        return name.removeprefix("FILE:") or "/etc/krb5.keytab"

    service_name = Unicode(
        "HTTP", help="Service part of the gateway's principal (clients ask for HTTP@<host>)."
    ).tag(config=True)

    hostname = Unicode(
        "",
        help="""Host part of the gateway's principal, as clients name it in the URL they use.
        Empty (the default): any host the keytab has a ``service_name`` key for.""",
    ).tag(config=True)

    realm = Unicode(
        help="The gateway's realm, whose principals are users by their short name "
        "(default: the default realm of krb5.conf).",
    ).tag(config=True)

    foreign_realms = Enum(
        ["refuse", "keep"],
        default_value="refuse",
        help="""Principals of other realms (cross-realm trust): "refuse" (the default), or
        "keep" the realm in the user name (``alice@OTHER.REALM``).""",
    ).tag(config=True)

    principal_to_user = Callable(
        None,
        allow_none=True,
        help="""A function ``(principal) -> user name`` (or ``None`` to refuse) that replaces
        the realm rules above, e.g. to map ``alice/admin@REALM`` to ``alice``.""",
    ).tag(config=True)

    admin_groups = Set(
        Unicode(), help="System groups whose members are admins (besides admin_users)."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._creds = None
        self._seen: dict[bytes, float] = {}

    # --- startup ------------------------------------------------------------------------
    async def setup(self):
        try:
            import gssapi
        except ImportError:
            raise StartupError(
                "authenticator_class 'kerberos' needs python-gssapi: "
                "pip install 'jupyterhub-dask-gateway[kerberos]'"
            ) from None
        self._check_keytab()
        loop = asyncio.get_running_loop()
        self._creds = await loop.run_in_executor(None, self._acquire, gssapi)
        if not self.realm:
            self.realm = await loop.run_in_executor(None, _default_realm, gssapi)
        self.log.info(
            "Kerberos: accepting %s tickets for realm %s",
            self._service_description(),
            self.realm,
        )

    def _check_keytab(self) -> None:
        path = self.keytab
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise StartupError(f"Kerberos keytab {path} does not exist") from None
        except OSError as exc:
            raise StartupError(f"Kerberos keytab {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StartupError(f"Kerberos keytab {path} is not a regular file")
        if st.st_mode & 0o077:
            raise StartupError(
                f"Kerberos keytab {path} is readable by other accounts (mode "
                f"{stat.S_IMODE(st.st_mode):o}); anyone who reads it can pose as the gateway: "
                f"chmod 600 {path}"
            )
        if not os.access(path, os.R_OK):
            raise StartupError(f"Kerberos keytab {path} is not readable by the gateway")

    def _service_description(self) -> str:
        return f"{self.service_name}/{self.hostname or '<any host>'}"

    def _acquire(self, gssapi):
        name = None
        if self.hostname:
            name = gssapi.Name(
                f"{self.service_name}@{self.hostname}", gssapi.NameType.hostbased_service
            )
        try:
            return gssapi.Credentials(usage="accept", name=name, store={"keytab": self.keytab})
        except gssapi.exceptions.GSSError as exc:
            # The message names the principal it looked for, never key material.
            raise StartupError(
                f"Kerberos keytab {self.keytab} has no usable key for "
                f"{self._service_description()}: {_minor(exc)}"
            ) from None

    # --- requests -----------------------------------------------------------------------
    async def authenticate_request(self, handler):
        header = handler.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "negotiate":
            return None
        value = value.strip()
        if not value or len(value) > 64 * 1024:
            raise Unauthorized("Kerberos: empty or oversized Negotiate token")
        try:
            token = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("Kerberos: the Negotiate token is not base64") from None
        digest = hashlib.sha256(token).digest()
        self._forget_old_tokens()
        if digest in self._seen:
            raise Unauthorized("Kerberos: this Negotiate token was already used (a replay)")
        principal, reply = await asyncio.get_running_loop().run_in_executor(
            None, self._accept, token
        )
        self._seen[digest] = time.monotonic()
        if reply:
            # Mutual authentication: the client checks that it reached the real gateway.
            handler.set_auth_header(
                "WWW-Authenticate", f"Negotiate {base64.b64encode(reply).decode()}"
            )
        name = self.user_for_principal(principal)
        # pwd/grp may ask the network (SSSD, LDAP): off the event loop.
        groups = await asyncio.to_thread(_system_groups, name)
        admin = bool(self.admin_groups & groups)
        return User(name, frozenset(groups), admin)

    def _accept(self, token: bytes) -> tuple[str, bytes | None]:
        import gssapi

        ctx = gssapi.SecurityContext(creds=self._creds, usage="accept")
        try:
            # A refused token may come back as an error token from step() with the
            # error raised by the next call on the context: both are inside this try.
            reply = ctx.step(token)
            if not ctx.complete:
                raise Unauthorized(
                    "Kerberos: the negotiation needs more than one step (not Kerberos)"
                )
            principal, target = str(ctx.initiator_name), str(ctx.target_name or "")
        except gssapi.exceptions.GSSError as exc:
            raise Unauthorized(f"Kerberos: {_explain(exc)}") from None
        try:
            # MIT's acceptor completes even on an expired ticket; the context then has
            # no lifetime left.
            alive = ctx.lifetime > 0
        except gssapi.exceptions.GSSError:
            alive = False
        if not alive:
            raise Unauthorized("Kerberos: the ticket has expired; run kinit again")
        if not target.startswith(f"{self.service_name}/"):
            raise Unauthorized(
                f"Kerberos: the ticket is for {target or 'another service'}, not for "
                f"{self._service_description()}"
            )
        return principal, reply

    def user_for_principal(self, principal: str) -> str:
        """The gateway user name of ``principal`` (raises ``Forbidden`` to refuse it)."""
        if self.principal_to_user is not None:
            name = self.principal_to_user(principal)
            if not name:
                raise Forbidden(f"Kerberos principal {principal} may not use this gateway")
            return str(name)
        user, _, realm = principal.rpartition("@")
        if not user or "/" in user:
            raise Forbidden(
                f"Kerberos principal {principal} is not a user (a service or an instance); "
                "set GatewayKerberosAuthenticator.principal_to_user to map it"
            )
        if realm == self.realm:
            return user
        if self.foreign_realms == "keep":
            return principal
        raise Forbidden(f"Kerberos principals of realm {realm} may not use this gateway")

    def _forget_old_tokens(self) -> None:
        if len(self._seen) < 256:
            return
        cutoff = time.monotonic() - REPLAY_WINDOW
        self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}

    def explicit_credentials(self, handler) -> bool:
        # Browsers with a ticket add Negotiate by themselves, like a Basic login.
        return False


def _default_realm(gssapi) -> str:
    name = gssapi.Name("probe", gssapi.NameType.user).canonicalize(gssapi.MechType.kerberos)
    return str(name).rpartition("@")[2]


def _system_groups(username: str) -> set[str]:
    """The account's groups (primary and supplementary) by name; none without an account."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return set()
    names = set()
    for gid in os.getgrouplist(username, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def _minor(exc) -> str:
    """The library's own reason (the minor status), without the major boilerplate."""
    text = str(exc)
    marker = "Minor ("
    if marker in text:
        text = text.split(marker, 1)[1].split("):", 1)[-1]
    return text.strip() or "unknown error"


def _explain(exc) -> str:
    """A user-facing reason for a refused token (no token or key material in it)."""
    reason = _minor(exc)
    lowered = reason.lower()
    if "not found in keytab" in lowered or "wrong principal" in lowered:
        return f"the ticket is for another service ({reason}); ask for HTTP@<the gateway's host>"
    if "expired" in lowered:
        return "the ticket has expired; run kinit again"
    if "skew" in lowered:
        return "the ticket's time is too far from the gateway's clock (or the token is old)"
    if "replay" in lowered:
        return "this Negotiate token was already used (a replay)"
    # Garbage, another mechanism (NTLM), or a token the library cannot parse: its minor
    # status then says nothing useful ("Success", "Unknown error").
    return "the Negotiate token is not a valid Kerberos token"
