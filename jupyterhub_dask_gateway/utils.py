"""Small pure helpers shared by several modules (no I/O here)."""

import hashlib
import hmac
import inspect
import re
import time

_MEMORY_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_memory(value) -> int:
    """Turn ``"2 G"``, ``"512M"``, ``"1.5GiB"`` or a number of bytes into bytes (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"Invalid memory value {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"Memory must be non-negative, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"Invalid memory value {value!r}")
    m = _MEMORY_RE.match(value)
    if not m:
        raise ValueError(f"Invalid memory value {value!r}; use a number of bytes or e.g. '2 G'")
    number, unit = m.groups()
    return int(float(number) * _MEMORY_UNITS[unit.upper()])


def format_bytes(n: int) -> str:
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of the wire protocol's timestamps."""
    return int(time.time() * 1000)


def require_coroutines(cls: type, base: type, names) -> None:
    """Raise ``TypeError`` unless ``cls`` overrides each of ``base``'s ``names`` with a
    coroutine function: a plugin contract checked when a subclass is defined.

    A class that sets ``_abstract = True`` in its own body (a base for other plugins)
    is exempt; its subclasses are checked.
    """
    if cls.__dict__.get("_abstract", False):
        return
    missing = [
        name
        for name in names
        if getattr(cls, name) is getattr(base, name)
        or not inspect.iscoroutinefunction(getattr(cls, name))
    ]
    if missing:
        raise TypeError(f"{cls.__name__} must define async {', '.join(missing)}")


# The dashboard proxy proves itself to a scheduler's HTTP server (dashboard and HTTP
# routes) with this header; the scheduler preload refuses requests without it, so other
# local accounts cannot use a dashboard's port directly. The key is derived from the
# cluster token (both ends know it) and does not reveal it: a page the owner's scheduler
# serves may show the key to a viewer, who may view that dashboard anyway.
DASHBOARD_KEY_HEADER = "X-Dask-Gateway-Dashboard-Key"


def dashboard_key(cluster_token: str) -> str:
    """The per-cluster secret the dashboard proxy sends in :data:`DASHBOARD_KEY_HEADER`."""
    return hmac.new(cluster_token.encode(), b"jhdg-dashboard-v1", hashlib.sha256).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets; any text (non-ASCII too) is just unequal."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
