"""The cluster manager's work queue: which clusters need a reconcile pass, and when.

The semantics are those of a Kubernetes controller's work queue, which suit a
reconciler whose passes are idempotent:

- a key is queued at most once, however often it is added;
- a key is handed to one worker at a time: adding a key that is being processed
  marks it *dirty*, and ``done`` queues it again, so no change is missed and no
  two passes over one cluster ever run concurrently (no polling for a lock);
- ``retry`` queues a key again after a per-key exponential backoff (``base``
  doubling up to ``cap``) and counts the attempts; ``forget`` resets the count
  after a pass that succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, base_delay: float = 0.5, max_delay: float = 30.0):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._ready: asyncio.Queue = asyncio.Queue()
        self._queued: set = set()
        self._processing: set = set()
        self._dirty: set = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        """Keys waiting for a worker (not those in process or in backoff)."""
        return len(self._queued)

    def add(self, key: Hashable) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds (an earlier pending add wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        """The next key; it is processing until ``done(key)``."""
        key = await self._ready.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def retry(self, key: Hashable) -> float:
        """Count a failed pass and add ``key`` again after its backoff; the delay."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self.base_delay * 2**n, self.max_delay)
        self.add_after(key, delay)
        return delay

    def failures(self, key: Hashable) -> int:
        """Failed passes of ``key`` since it last succeeded."""
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        """Reset ``key``'s failure count (a pass succeeded) and drop a pending retry."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
