"""The SNI route table the TCP proxy follows (cluster name → scheduler host:port).

A scheduler on the proxy's host may also offer a unix socket that takes client
connections directly (``proxy/handoff.py``); that socket, with the uid and pid
that must be listening on it (``Backend.handoff_target``), rides along in
``handoff``.
It is learnt from heartbeats and not persisted: after a gateway restart the proxy
splices until the next heartbeat brings it back.

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
        self.handoff: dict[str, dict] = {}
        # The gateway's own HTTP server takes connections the same way (set once at start).
        self.http_handoff = ""
        self._changed = asyncio.Event()

    def _bump(self):
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def put(self, name: str, scheduler_address: str, handoff: dict | None = None) -> None:
        """Route ``name``; ``handoff`` None keeps what is known, ``{}`` drops it."""
        target = scheduler_address.split("://", 1)[-1]
        changed = self.routes.get(name) != target
        self.routes[name] = target
        if handoff is not None and self.handoff.get(name, {}) != handoff:
            changed = True
            if handoff:
                self.handoff[name] = handoff
            else:
                self.handoff.pop(name, None)
        if changed:
            self._bump()

    def delete(self, name: str) -> None:
        self.handoff.pop(name, None)
        if self.routes.pop(name, None) is not None:
            self._bump()

    async def wait_for_change(self, since: int, timeout: float) -> None:
        if since != self.version:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def snapshot(self) -> dict:
        return {
            "version": self.version,
            "routes": dict(self.routes),
            "handoff": dict(self.handoff),
            "http_handoff": self.http_handoff,
        }
