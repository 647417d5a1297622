"""Plain test helpers: free ports, polling with a deadline, processes, the test accounts.

A regular module rather than part of ``conftest.py``: ``tests/`` and ``tests/ui/`` both have
a ``conftest.py``, and ``from conftest import ...`` finds whichever pytest loaded last.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

# The Basic-auth password of the gateways the `make_gateway` fixture starts.
PASSWORD = "test-password"

# System accounts the tests' users run as (created by the `accounts` fixture, as root).
TEST_ACCOUNTS = ("alice", "bob", "carol", "dave", "hubadmin")


def ensure_account(name: str) -> pwd.struct_passwd:
    """The local account ``name``, created (with a home) if missing. Needs root."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def open_to_accounts(path: Path) -> Path:
    """Let other accounts traverse ``path`` and its parents up to the temp dir (o+x).

    pytest makes its temporary directories 0700; users' processes (clusters, single-user
    servers) must pass through them to reach their own work dirs, as they would through
    a real deployment's state directory. Nothing becomes listable or readable.
    """
    top = Path(tempfile.gettempdir()).resolve()
    p = Path(path).resolve()
    while p != top and p != p.parent:
        mode = stat.S_IMODE(p.stat().st_mode)
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)
        p = p.parent
    return Path(path)


def give_to(name: str, *paths: Path) -> None:
    """Make each of ``paths``, and everything below it, belong to the account ``name``."""
    account = pwd.getpwnam(name)
    for top in paths:
        for path in [Path(top), *Path(top).rglob("*")]:
            os.lchown(path, account.pw_uid, account.pw_gid)


def processes_of(accounts) -> list[psutil.Process]:
    """Every process running as one of ``accounts`` (names)."""
    uids = set()
    for name in accounts:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    found = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real in uids:
                found.append(p)
        except psutil.Error:
            continue
    return found


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


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


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


def start_logged(args, log_path: Path, **popen_kwargs) -> subprocess.Popen:
    """Start ``args`` in a session of its own, its output appended to ``log_path``.

    The session lets ``terminate`` kill it with whatever it started in it.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen_kwargs
        )


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``proc`` and wait ``timeout`` seconds for it, then SIGKILL its session.

    For a process from ``start_logged``; a no-op if it has already exited.
    """
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the session ended meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


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


# A hostile scheduler, for ClusterConfig.python: takes the launcher's request (or, in a
# batch job, the environment) and reports the addresses in $FORGED (a JSON object) over its own.
FORGING_SCHEDULER = """
import json, os, sys, time, urllib.request

if "DASK_GATEWAY_API_TOKEN" in os.environ:
    env = dict(os.environ)  # a batch job: its environment file was loaded
else:
    env = json.loads(sys.stdin.readline())["env"]  # the local launcher's request
claims = json.loads(env.get("FORGED", "{}"))
url = f"{env['DASK_GATEWAY_API_URL']}/clusters/{env['DASK_GATEWAY_CLUSTER_NAME']}/heartbeat"
import socket
held = socket.create_server(("127.0.0.1", 0))  # a port of its own, as a scheduler has
own = f"tls://127.0.0.1:{held.getsockname()[1]}"
body = {"scheduler_address": own, "dashboard_address": "", "api_address": "",
        "count": 0, "workers": {}, "closing_workers": [], "closed_workers": [], **claims}
req = urllib.request.Request(url, json.dumps(body).encode(), {
    "Authorization": "token " + env["DASK_GATEWAY_API_TOKEN"],
    "Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=10)
except Exception as e:
    print("heartbeat answered", e, flush=True)
time.sleep(120)
"""
