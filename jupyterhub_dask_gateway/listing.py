"""Answers to ``GET api/v1/clusters/``, encoded once and reused until a cluster changes.

Clients poll their list (the panel every few seconds, ``Gateway.list_clusters``
in loops), and a RUNNING cluster's model carries its certificate and key (~3 KB):
listing 100 clusters means ~300 KB of JSON per request. ``ListingCache`` keeps
each cluster's encoded model and each recent answer, and the cluster manager, the
only code that changes clusters, calls ``changed`` whenever it saves one, so an
answer is never staler than the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .models import Cluster, ClusterStatus, User


class ListingCache:
    def __init__(self, max_answers: int = 64):
        self.max_answers = max_answers
        # Bumped by every change; an answer made at an older generation is stale.
        self.generation = 0
        # name -> (dashboard prefix, b'"<name>":<model>'), dropped when the cluster changes.
        self._entries: dict[str, tuple[str, bytes]] = {}
        # (user, groups, statuses, prefix) -> (generation, body)
        self._answers: dict[tuple, tuple[int, bytes]] = {}

    def changed(self, cluster: Cluster | None = None) -> None:
        """``cluster`` changed, was added or was removed (``None``: any may have)."""
        self.generation += 1
        if cluster is not None:
            self._entries.pop(cluster.name, None)

    def answer(
        self,
        clusters: Iterable[Cluster],
        user: User,
        statuses: set[ClusterStatus] | None,
        prefix: str = "",
    ) -> bytes:
        """The JSON object ``{name: model}`` of the clusters ``user`` lists."""
        key = (user.name, user.groups, None if statuses is None else frozenset(statuses), prefix)
        cached = self._answers.get(key)
        if cached is not None and cached[0] == self.generation:
            return cached[1]
        parts = [self._entry(c, prefix) for c in clusters if listed(c, user, statuses)]
        body = b"{" + b",".join(parts) + b"}"
        if len(self._answers) >= self.max_answers:
            self._answers.clear()
        self._answers[key] = (self.generation, body)
        return body

    def _entry(self, cluster: Cluster, prefix: str) -> bytes:
        cached = self._entries.get(cluster.name)
        if cached is None or cached[0] != prefix:
            # Names are hex, so the key needs no escaping.
            model = json.dumps(cluster.to_wire(prefix))
            cached = (prefix, f'"{cluster.name}":{model}'.encode())
            self._entries[cluster.name] = cached
        return cached[1]


def listed(
    cluster: Cluster, user: User, statuses: set[ClusterStatus] | None, everyone: bool = False
) -> bool:
    """Whether a listing shows ``cluster``: those ``user`` may view (every user's, for an
    admin asking for all), only active ones unless a status filter says otherwise."""
    if not user.may_view(cluster, as_admin=everyone):
        return False
    if statuses is None:
        return cluster.active
    return cluster.public_status in statuses
