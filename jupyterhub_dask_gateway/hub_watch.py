"""Under a Hub, a user's clusters end with their last server (no zombie clusters).

Users close the notebook, the Hub culls the server, and a cluster would keep its
cores until its idle timeout. The gateway lives inside the Hub, so it asks the Hub:
every ``hub_poll_period`` seconds, one paginated ``GET /users?state=active`` with
the service's own token lists the users with a running (or starting) server, named
servers included. A cluster owner who was seen with a server and no longer has one
gets a grace period (``server_stop_grace_period``: a restart or a notebook
reconnecting in time keeps the clusters); then their clusters stop with a reason
that says why. A deleted user's clusters stop at once.

One request per period whatever the number of clusters (pages of the Hub's size),
and one ``GET /users/<name>`` per owner the moment they are first seen without a
server (is the user still there?). Owners never seen with a server (clusters made
with an API token from outside the Hub) are left alone.

A user who loses the ``access:services!service=<name>`` scope loses their clusters
at once. Every user has it through the default ``user`` role (``configure_jupyterhub``
adds it to ``extra_user_scopes``), so nothing is checked unless the admin redefined
that role in ``c.JupyterHub.load_roles``; then the roles that grant it come from the
same config file, and every ``access_check_period`` the watch reads the owners' roles
and their groups' roles from the Hub (``read:roles:users``, ``read:roles:groups``).
The Hub has no API for a role's scopes, hence the config.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets.config.loader import LazyConfigValue

PAGINATION = "application/jupyterhub-pagination+json"


class ServerWatch:
    def __init__(
        self,
        manager,
        api_url: str,
        api_token: str,
        grace: float,
        period: float,
        log,
        clock: Callable[[], float] = time.time,
        access_roles: set[str] | None = None,
        access_check_period: float = 60,
    ):
        self.manager = manager
        self.api_url = api_url.rstrip("/")
        self.api_token = api_token
        self.grace = grace
        self.period = period
        self.log = log
        self.clock = clock
        self._http = AsyncHTTPClient(force_instance=True)
        self._seen_active: set[str] = set()
        self._inactive_since: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        # None: every user has access (the default user role grants it).
        self.access_roles = access_roles
        self.access_check_period = access_check_period
        self._access_checked = float("-inf")
        self._warned: set[str] = set()
        self._exists_checked: dict[str, float] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-server-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._http.close()

    async def _run(self):
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The Hub restarting, say: try again next period, clusters untouched.
                self.log.warning("Could not ask the Hub which servers run: %s", exc)

    async def poll_once(self) -> None:
        owners = {
            c.username
            for c in self.manager.clusters.values()
            if c.active and ":" not in c.username  # Hub users, not services
        }
        self._forget_except(owners)
        if not owners:
            return
        now = self.clock()
        if self.access_roles is not None and now - self._access_checked >= self.access_check_period:
            self._access_checked = now
            for name in sorted(owners - await self.users_with_access(owners)):
                self._stop(name, f"its owner {name} lost access to the gateway")
                owners.discard(name)
        active = await self.active_users()
        for name in sorted(owners):
            if name in active:
                if name not in self._seen_active:
                    self.log.info("Hub: %s has a server; their clusters follow it", name)
                self._seen_active.add(name)
                self._inactive_since.pop(name, None)
                continue
            first = name not in self._inactive_since
            if first:
                self._inactive_since[name] = now
                if name in self._seen_active:
                    self.log.info(
                        "Hub: %s has no server any more; their clusters stop in %g s",
                        name,
                        self.grace,
                    )
            # Is the user still there? When first seen without a server, then again every
            # access_check_period (a user deleted later, who never had a server).
            last = self._exists_checked.get(name, float("-inf"))
            if first or now - last >= self.access_check_period:
                self._exists_checked[name] = now
                if not await self.user_exists(name):
                    self._stop(name, f"its owner {name} was deleted from the Hub")
                    continue
            if name in self._seen_active and now - self._inactive_since[name] >= self.grace:
                self._stop(
                    name,
                    f"the last server of its owner {name} stopped "
                    f"(culled, or stopped by the user or an admin) more than "
                    f"{self.grace:g} s ago",
                )

    def _stop(self, username: str, why: str) -> None:
        for cluster in self.manager.user_clusters(username):
            self.manager.stop(cluster, f"because {why}")
        self._seen_active.discard(username)
        self._inactive_since.pop(username, None)

    def _forget_except(self, owners: set[str]) -> None:
        self._seen_active &= owners
        self._exists_checked = {k: v for k, v in self._exists_checked.items() if k in owners}
        for name in list(self._inactive_since):
            if name not in owners:
                del self._inactive_since[name]

    async def _get(self, path: str, **params) -> dict | list:
        url = f"{self.api_url}{path}" + (f"?{urlencode(params)}" if params else "")
        resp = await self._http.fetch(
            HTTPRequest(
                url,
                headers={"Authorization": f"token {self.api_token}", "Accept": PAGINATION},
                request_timeout=20,
            )
        )
        return json.loads(resp.body)

    async def active_users(self) -> set[str]:
        """Names of the users with a running or starting server (any of their servers)."""
        return {u["name"] for u in await self._all("/users", state="active")}

    async def users_with_access(self, names: set[str]) -> set[str]:
        """Which of ``names`` hold a role that grants the access scope, themselves or
        through a group (Hub admins always do; users the Hub does not know never)."""
        group_roles = {g["name"]: set(g.get("roles") or ()) for g in await self._all("/groups")}
        allowed = set()
        for name in names:
            try:
                user = await self._get(f"/users/{quote(name, safe='')}")
            except HTTPClientError as exc:
                if exc.code == 404:
                    continue
                raise
            if "roles" not in user:
                # The service's role lacks read:roles:users (an older hand-written role):
                # unknown is not "no access".
                self._warn_once(
                    "Cannot check who still has access: the service's role needs the "
                    "read:roles:users and read:roles:groups scopes"
                )
                allowed.add(name)
                continue
            roles = set(user.get("roles") or ())
            for group in user.get("groups") or ():
                roles |= group_roles.get(group, set())
            if user.get("admin") or roles & self.access_roles:
                allowed.add(name)
        return allowed

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.log.warning(message)

    async def _all(self, path: str, **params) -> list[dict]:
        """Every item of a paginated Hub list."""
        items: list[dict] = []
        while True:
            page = await self._get(path, offset=len(items), **params)
            if isinstance(page, list):  # a Hub without pagination: one answer
                return items + page
            new = page.get("items") or []
            items += new
            if not new or not (page.get("_pagination") or {}).get("next"):
                return items

    async def user_exists(self, name: str) -> bool:
        try:
            await self._get(f"/users/{quote(name, safe='')}")
        except HTTPClientError as exc:
            if exc.code == 404:
                return False
            raise
        return True


def access_roles(hub_config, service_name: str) -> set[str] | None:
    """The roles whose scopes let a user use the service, from the Hub's own config
    (``c.JupyterHub.load_roles``, ``extra_user_scopes``), or ``None`` when every user has
    it through the ``user`` role (``configure_jupyterhub`` adds the scope to
    ``extra_user_scopes``) or the config does not say (the service loads a file of its
    own): then nothing is checked."""
    grants = {"access:services", f"access:services!service={service_name}"}
    if not hasattr(hub_config, "get"):
        return None
    roles = _resolved(hub_config.get("load_roles"), [])
    defined = {
        r.get("name"): set(r.get("scopes") or ()) for r in roles or () if isinstance(r, dict)
    }
    extra = _resolved(hub_config.get("extra_user_scopes"), set())
    if "user" in defined:
        user_scopes = defined["user"]
    elif roles is None and extra is None:
        return None  # not the Hub's config: nothing to go by
    else:
        user_scopes = {"self", *(extra or ())}
    if user_scopes & grants:
        return None
    return {"admin"} | {name for name, scopes in defined.items() if scopes & grants}


def _resolved(value, empty):
    """A config value, with ``+=`` / ``|=`` on an unset trait (a LazyConfigValue) applied."""
    if isinstance(value, LazyConfigValue):
        return value.get_value(empty)
    return value if isinstance(value, (list, tuple, set, frozenset)) else None
