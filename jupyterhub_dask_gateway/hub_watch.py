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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

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
        active = await self.active_users()
        now = self.clock()
        for name in sorted(owners):
            if name in active:
                if name not in self._seen_active:
                    self.log.info("Hub: %s has a server; their clusters follow it", name)
                self._seen_active.add(name)
                self._inactive_since.pop(name, None)
                continue
            if name not in self._inactive_since:
                self._inactive_since[name] = now
                if name in self._seen_active:
                    self.log.info(
                        "Hub: %s has no server any more; their clusters stop in %g s",
                        name,
                        self.grace,
                    )
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
        names: set[str] = set()
        offset = 0
        while True:
            page = await self._get("/users", state="active", offset=offset)
            if isinstance(page, list):  # a Hub without pagination: one answer
                return names | {u["name"] for u in page}
            items = page.get("items") or []
            names |= {u["name"] for u in items}
            following = (page.get("_pagination") or {}).get("next")
            if not following or not items:
                return names
            offset = int(following.get("offset", offset + len(items)))

    async def user_exists(self, name: str) -> bool:
        try:
            await self._get(f"/users/{quote(name, safe='')}")
        except HTTPClientError as exc:
            if exc.code == 404:
                return False
            raise
        return True
