"""The TCP proxy's counters, and how they travel to the gateway.

The proxy is its own process, so the gateway cannot read its state: the proxy counts
accepted connections by what became of them and the bytes it spliced, and sends the
totals in a header of every route poll (``GET api/v1/routes``, authenticated by the
proxy token). The gateway keeps the last report and exposes it as Prometheus counters
(``metrics.py``). The counts are monotone from the proxy's start (``started``), so a
proxy restart is an ordinary counter reset, and a restarted gateway that adopts a
running proxy picks up where it was.

This module owns the counters, the header's format and its parser; it does no I/O.
"""

from __future__ import annotations

import time

__all__ = ["CONNECTION_KINDS", "HEADER", "ProxyStats", "parse_report"]

#: The request header of the route poll that carries the report.
HEADER = "X-Dask-Gateway-Proxy-Stats"

#: What became of an accepted connection (the ``kind`` label of the gateway's metric).
CONNECTION_KINDS = (
    "scheduler",  # TLS for a routed cluster, spliced to its scheduler
    "scheduler_handoff",  # the same, the socket handed to a local scheduler
    "http",  # anything else, spliced to the gateway's HTTP API
    "http_handoff",  # the same, the socket handed to the gateway's HTTP server
    "refused",  # closed unrouted: unknown cluster, malformed hello, handshake timeout
    "failed",  # the target could not be reached (or a hand-off went unanswered)
)
# Besides the kinds: milliseconds since the epoch of the proxy's start, bytes read from
# clients ("in") and from their targets ("out"), and connections spliced right now.
_OTHER_KEYS = ("started", "in", "out", "open")
_KEYS = frozenset(CONNECTION_KINDS + _OTHER_KEYS)
# The header is ~150 bytes; anything much longer is not ours.
MAX_HEADER = 1024
_MAX_VALUE = 2**63 - 1


class ProxyStats:
    """The proxy's counters, kept as plain integers (the data plane adds to them).

    ``bytes`` is a two-item list, indexed by :attr:`IN` (read from clients) and
    :attr:`OUT` (read from schedulers or the API, towards clients), so counting a
    chunk costs one list item addition.
    """

    IN, OUT = 0, 1

    def __init__(self, clock=time.time):
        self.started = int(clock() * 1000)
        self.connections = dict.fromkeys(CONNECTION_KINDS, 0)
        self.bytes = [0, 0]

    def count(self, kind: str) -> None:
        self.connections[kind] += 1

    def encode(self, open_connections: int = 0) -> str:
        """The header value: ``key=value`` pairs separated by commas."""
        values = {
            "started": self.started,
            **self.connections,
            "in": self.bytes[self.IN],
            "out": self.bytes[self.OUT],
            "open": open_connections,
        }
        return ",".join(f"{k}={v}" for k, v in values.items())


def parse_report(value: str | None) -> dict[str, int] | None:
    """The header's counters, or None for a missing or malformed header.

    Every key is one of the known ones (others, from a newer proxy, are ignored),
    every value a decimal integer below 2**63; a known key left out counts 0.
    """
    if not value or len(value) > MAX_HEADER:
        return None
    out = dict.fromkeys(_KEYS, 0)
    for item in value.split(","):
        key, sep, number = item.strip().partition("=")
        if not sep or not number.isascii() or not number.isdigit() or len(number) > 19:
            return None
        if key in _KEYS:
            n = int(number)
            if n > _MAX_VALUE:
                return None
            out[key] = n
    return out
