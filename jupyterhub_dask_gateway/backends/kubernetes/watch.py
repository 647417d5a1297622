"""One watch of a namespace's pods (by label selector) and one of its pod events.

The backend answers every liveness check and address check from here, so a
thousand clusters cost two long-lived requests per namespace, not a request per
cluster per check. The watch resumes from the last resource version it saw; when
that has expired (410 Gone) it lists again, and a pod that vanished in between
is remembered as deleted. Bookmarks keep the resource version fresh on a quiet
namespace, so a resumed watch rarely needs the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque

from .client import KubeAPI, KubeError

WATCH_SECONDS = 300
_EVENTS_KEPT_PER_POD = 5
_PODS_WITH_EVENTS = 5000
_TOMBSTONES = 5000
_FRESH_SECONDS = 60


class NamespaceWatch:
    """The pods one gateway instance made in one namespace, kept current."""

    def __init__(self, api: KubeAPI, namespace: str, selector: str, log: logging.Logger):
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.log = log
        self.pods: dict[str, dict] = {}
        self.deleted: OrderedDict[str, bool] = OrderedDict()
        self.warnings: OrderedDict[str, deque] = OrderedDict()
        self.synced = asyncio.Event()
        self.waited = False  # a check already waited for the first list in vain
        self._tasks: list[asyncio.Task] = []
        self._fresh: dict[str, float] = {}  # pods created here lately: a list may predate them

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(self._pods_once), name=f"k8s-pods-{self.namespace}"),
            loop.create_task(self._run(self._events_once), name=f"k8s-events-{self.namespace}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- what the backend reads -------------------------------------------------------------
    def get(self, name: str) -> dict | None:
        return self.pods.get(name)

    def was_deleted(self, name: str) -> bool:
        return name in self.deleted

    def warnings_of(self, name: str) -> list[str]:
        return list(self.warnings.get(name, ()))

    def remember(self, pod: dict) -> None:
        """A pod this gateway just created: known before its first watch event."""
        name = pod["metadata"]["name"]
        self.deleted.pop(name, None)
        self.pods.setdefault(name, pod)
        now = time.monotonic()
        self._fresh[name] = now
        if len(self._fresh) > _TOMBSTONES:  # bounded between the (rare) relists
            self._fresh = {n: t for n, t in self._fresh.items() if now - t < _FRESH_SECONDS}

    def forget(self, name: str) -> None:
        """A pod of a stopped cluster: nothing about it is asked for again."""
        self.pods.pop(name, None)
        self.warnings.pop(name, None)
        self.deleted.pop(name, None)

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- the loops -------------------------------------------------------------------------
    async def _run(self, once) -> None:
        delay = 0.5
        resource_version = ""
        while True:
            try:
                resource_version = await once(resource_version)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:  # expired: list again
                    resource_version = ""
                    continue
                self.log.warning("Kubernetes watch in %s: %s", self.namespace, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
            except Exception:
                self.log.exception("Kubernetes watch in %s failed", self.namespace)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def _follow(self, events, resource_version: str, handle) -> str:
        """Apply one watch request's events; the last resource version seen."""
        async for event in events:
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise KubeError(int(obj.get("code") or 0), obj.get("message") or "watch error")
            resource_version = (obj.get("metadata") or {}).get(
                "resourceVersion"
            ) or resource_version
            if kind != "BOOKMARK":
                handle(kind, obj)
        return resource_version

    async def _pods_once(self, resource_version: str) -> str:
        if not resource_version:
            listing = await self.api.list_pods(self.namespace, self.selector)
            current = {p["metadata"]["name"]: p for p in listing.get("items") or []}
            now = time.monotonic()
            self._fresh = {n: t for n, t in self._fresh.items() if now - t < _FRESH_SECONDS}
            for name in set(self.pods) - set(current):
                if name in self._fresh:
                    current[name] = self.pods[name]
                else:
                    self._mark_deleted(name)
            self.pods = current
            resource_version = listing["metadata"]["resourceVersion"]
            self.synced.set()
        events = self.api.watch_pods(self.namespace, self.selector, resource_version, WATCH_SECONDS)
        return await self._follow(events, resource_version, self._on_pod)

    def _on_pod(self, kind: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.pods.pop(name, None)
            self._mark_deleted(name)
        else:
            self.pods[name] = pod

    def _mark_deleted(self, name: str) -> None:
        self.deleted[name] = True
        while len(self.deleted) > _TOMBSTONES:
            self.deleted.popitem(last=False)

    async def _events_once(self, resource_version: str) -> str:
        if not resource_version:
            listing = await self.api.list_pod_events(self.namespace)
            for event in listing.get("items") or []:
                self._on_event("ADDED", event)
            resource_version = listing["metadata"]["resourceVersion"]
        events = self.api.watch_pod_events(self.namespace, resource_version, WATCH_SECONDS)
        return await self._follow(events, resource_version, self._on_event)

    def _on_event(self, kind: str, event: dict) -> None:
        if kind == "DELETED" or event.get("type") != "Warning":
            return
        name = (event.get("involvedObject") or {}).get("name") or ""
        if not name.startswith(("dask-scheduler-", "dask-worker-")):
            return
        text = f"{event.get('reason') or 'Warning'}: {(event.get('message') or '').strip()}"
        kept = self.warnings.setdefault(name, deque(maxlen=_EVENTS_KEPT_PER_POD))
        if text not in kept:
            kept.append(text[:1000])
        self.warnings.move_to_end(name)
        while len(self.warnings) > _PODS_WITH_EVENTS:
            self.warnings.popitem(last=False)
