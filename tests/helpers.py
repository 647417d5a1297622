"""Plain test helpers: free ports, polling with a deadline, finding and killing processes.

A regular module rather than part of ``conftest.py``: ``tests/`` and ``tests/ui/`` both have
a ``conftest.py``, and ``from conftest import ...`` finds whichever pytest loaded last.
"""

from __future__ import annotations

import socket
import time

import psutil
import pytest

# The Basic-auth password of the gateways the `make_gateway` fixture starts.
PASSWORD = "test-password"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for processes that need one in their config)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below if we time out
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout}s waiting for {what}; last error: {last_exc}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_under(directory: str) -> list[psutil.Process]:
    """Processes whose working directory is inside ``directory`` (our clusters' processes)."""
    found = []
    for p in psutil.process_iter(["cwd", "cmdline"]):
        try:
            cwd = p.info["cwd"] or ""
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if cwd.startswith(directory) or directory in cmd:
            found.append(p)
    return found


def kill_all(procs):
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def assert_invisible(stranger, name: str, scale_to: int = 2) -> None:
    """``stranger`` (a dask-gateway ``Gateway``) can neither see, connect to, scale nor
    stop the cluster ``name``: every call answers as for a cluster that does not exist."""
    assert stranger.list_clusters() == []
    with pytest.raises(ValueError, match="not found"):
        stranger.connect(name)
    with pytest.raises(ValueError, match="not found"):
        stranger.scale_cluster(name, scale_to)
    stranger.stop_cluster(name)  # a no-op for a cluster the stranger cannot see
