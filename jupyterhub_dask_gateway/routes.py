"""The SNI route table the TCP proxy follows (cluster name → scheduler host:port).

The gateway changes it as clusters start and stop; the proxy process long-polls
``GET api/v1/routes?since=<version>`` and gets the whole table back whenever the
version moves. Versions start from the clock so that a restarted gateway's
table never looks older than what a proxy already holds.
"""

from __future__ import annotations

import asyncio
import time


class RouteTable:
    def __init__(self):
        self.version = int(time.time() * 1000)
        self.routes: dict[str, str] = {}
        self._changed = asyncio.Event()

    def _bump(self):
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def put(self, name: str, scheduler_address: str) -> None:
        target = scheduler_address.split("://", 1)[-1]
        if self.routes.get(name) != target:
            self.routes[name] = target
            self._bump()

    def delete(self, name: str) -> None:
        if self.routes.pop(name, None) is not None:
            self._bump()

    async def wait_for_change(self, since: int, timeout: float) -> None:
        if since != self.version:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def snapshot(self) -> dict:
        return {"version": self.version, "routes": dict(self.routes)}
