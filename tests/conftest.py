"""Shared fixtures: real gateway processes on 127.0.0.1, cleaned up after each test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

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


class GatewayProcess:
    """A gateway started from its CLI (``jupyterhub-dask-gateway --config FILE``)."""

    def __init__(self, directory: Path, config: str, api_port: int, proxy_port: int):
        self.directory = directory
        self.state_dir = str(directory / "state")
        self.api_port = api_port
        self.proxy_port = proxy_port
        self.config_path = directory / "gateway_config.py"
        self.config_path.write_text(config)
        self.log_path = directory / "gateway.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The public address: the proxy port also serves the HTTP API."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def api_address(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_address(self) -> str:
        return f"gateway://127.0.0.1:{self.proxy_port}"

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "jupyterhub-dask-gateway"),
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()[-3000:]}")
            return port_open(self.api_port) and port_open(self.proxy_port)

        wait_for(ready, timeout, what="the gateway to listen")
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def gateway(self, user="alice", password=PASSWORD, **kwargs):
        from dask_gateway import BasicAuth, Gateway

        return Gateway(self.address, auth=BasicAuth(user, password), **kwargs)

    def cleanup(self):
        self.kill(signal.SIGKILL)
        kill_all(processes_under(self.state_dir))


def gateway_config(state_dir, api_port, proxy_port, extra=""):
    return textwrap.dedent(f"""
        c.DaskGateway.address = "127.0.0.1:{api_port}"
        c.DaskGateway.proxy_address = "127.0.0.1:{proxy_port}"
        c.DaskGateway.state_dir = {str(state_dir)!r}
        c.DaskGateway.authenticator_class = "basic"
        c.BasicAuthenticator.password = {PASSWORD!r}
        c.DaskGateway.cluster_heartbeat_period = 2
        c.ClusterConfig.worker_memory = "512 M"
        c.ClusterConfig.scheduler_memory = "512 M"
        c.LocalBackend.warm_pool_size = 1
        c.LocalBackend.sigint_timeout = 3
    """) + textwrap.dedent(extra)


@pytest.fixture
def make_gateway(tmp_path):
    """Factory: ``make_gateway(extra_config="...")`` starts a gateway from its CLI.

    Every gateway, its proxy and every cluster process it started are killed at
    teardown, whatever the test did.
    """
    started: list[GatewayProcess] = []

    def factory(extra="", start=True, directory=None) -> GatewayProcess:
        d = directory or tmp_path / f"gw{len(started)}"
        d.mkdir(exist_ok=True)
        api, proxy = free_port(), free_port()
        gw = GatewayProcess(d, gateway_config(d / "state", api, proxy, extra), api, proxy)
        started.append(gw)
        return gw.start() if start else gw

    yield factory
    for gw in started:
        gw.cleanup()


@pytest.fixture
def gateway(make_gateway):
    """One running standalone gateway with Basic auth and the local backend."""
    return make_gateway()


def pytest_configure(config):
    os.environ.setdefault("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "30s")


@pytest.fixture(autouse=True)
def _collect_garbage_on_main_thread():
    """Run the garbage collector only here, on the main thread, between tests.

    Two client-side bugs make automatic collection unsafe in a long test process:
    a dask-gateway ``Gateway`` collected on the client's own event-loop thread
    deadlocks in ``__del__`` (it waits for that same loop), and late finalisation
    of the client's reference cycles trips CPython 3.11.7's gh-106905 at exit.
    """
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
