"""The embedded default backend: schedulers and workers as local processes.

Every process runs in its own session (so it outlives the gateway and can be
signalled as a group), in a 0700 working directory per cluster holding the
cluster's key pair (0600) and one log file per process. Stops climb the ladder
SIGINT → SIGTERM → SIGKILL. A small pool of pre-imported interpreters
(``warm.py``) makes starting a scheduler or worker take milliseconds instead of
the ~1.5 s Python needs to import distributed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import time

import psutil
from traitlets import Bool, Float, Integer, List, Unicode, default

from ..errors import BackendError
from .base import Backend


class LocalBackend(Backend):
    """Runs clusters as subprocesses of the gateway's own Python environment (or ``python``)."""

    _abstract = False

    clusters_directory = Unicode(
        help="Directory holding one 0700 working directory per cluster "
        "(default: <DaskGateway.state_dir>/clusters).",
    ).tag(config=True)

    inherited_environment = List(
        Unicode(),
        [
            "PATH",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "CONDA_PREFIX",
            "CONDA_DEFAULT_ENV",
            "LANG",
            "LC_ALL",
            "HOME",
            "TMPDIR",
            "LD_LIBRARY_PATH",
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
        ],
        help="Environment variables passed from the gateway to schedulers and workers.",
    ).tag(config=True)

    warm_pool_size = Integer(
        2,
        min=0,
        help="Pre-started interpreters kept ready to become schedulers or workers; "
        "0 disables the pool (each process then pays the ~1.5 s import time).",
    ).tag(config=True)

    socket_handoff = Bool(
        True,
        help="Let the proxy pass each client connection's socket to the scheduler "
        "(SCM_RIGHTS over a unix socket), so scheduler traffic skips the proxy process. "
        "False makes the proxy copy every byte, as it must for remote schedulers.",
    ).tag(config=True)

    sigint_timeout = Float(10, help="Seconds to wait after SIGINT before SIGTERM.").tag(config=True)
    sigterm_timeout = Float(5, help="Seconds to wait after SIGTERM before SIGKILL.").tag(
        config=True
    )
    sigkill_timeout = Float(5, help="Seconds to wait after SIGKILL before giving up.").tag(
        config=True
    )

    @default("clusters_directory")
    def _default_clusters_directory(self):
        state_dir = getattr(self.parent, "state_dir", None) or os.getcwd()
        return os.path.join(state_dir, "clusters")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pool: list[asyncio.subprocess.Process] = []
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._refill_task: asyncio.Task | None = None
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------
    async def setup(self):
        os.makedirs(self.clusters_directory, mode=0o700, exist_ok=True)
        self._schedule_refill()

    async def cleanup(self):
        self._closing = True
        if self._refill_task:
            self._refill_task.cancel()
        pool, self._pool = self._pool, []
        for proc in pool:
            if proc.stdin:
                proc.stdin.close()
        for proc in pool:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    def _schedule_refill(self):
        if self._closing or (self._refill_task and not self._refill_task.done()):
            return
        self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    async def _refill(self):
        self._pool = [p for p in self._pool if p.returncode is None]
        while not self._closing and len(self._pool) < self.warm_pool_size:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "jupyterhub_dask_gateway.backends.warm",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                    env=self._base_env(),
                    cwd=self.clusters_directory,
                )
            except OSError:
                self.log.warning("Could not start a warm interpreter", exc_info=True)
                return
            self._pool.append(proc)

    # --- process helpers ----------------------------------------------------------------
    def _base_env(self) -> dict:
        return {k: os.environ[k] for k in self.inherited_environment if k in os.environ}

    def _workdir(self, cluster) -> str:
        return os.path.join(self.clusters_directory, cluster.name)

    def _prepare_workdir(self, cluster) -> tuple[str, str, str]:
        workdir = self._workdir(cluster)
        os.makedirs(os.path.join(workdir, "logs"), mode=0o700, exist_ok=True)
        os.chmod(workdir, 0o700)
        certs = os.path.join(workdir, ".certs")
        os.makedirs(certs, mode=0o700, exist_ok=True)
        cert_path = os.path.join(certs, "dask.crt")
        key_path = os.path.join(certs, "dask.pem")
        for path, data in ((cert_path, cluster.tls_cert), (key_path, cluster.tls_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
        return workdir, cert_path, key_path

    async def _launch(self, argv: list[str], env: dict, cwd: str, log: str) -> dict:
        """Start ``argv`` (``python -m module args``), through a warm process when possible."""
        python, _, module, *args = argv
        proc = None
        if python == sys.executable:
            while self._pool:
                candidate = self._pool.pop(0)
                if candidate.returncode is None:
                    proc = candidate
                    break
        if proc is not None:
            request = {"module": module, "argv": args, "env": env, "cwd": cwd, "log": log}
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                proc = None
            self._schedule_refill()
        if proc is None:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    start_new_session=True,
                    env=env,
                    cwd=cwd,
                )
            except OSError as exc:
                raise BackendError(f"Could not start {argv[0]}: {exc}") from None
            finally:
                os.close(fd)
        self._children[proc.pid] = proc
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            created = time.time()
        return {"pid": proc.pid, "create_time": created, "log": log}

    def _alive(self, state: dict) -> bool:
        pid = state.get("pid")
        if not pid:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.returncode is None
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - state.get("create_time", p.create_time())) > 1:
                return False  # the pid was reused by an unrelated process
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    async def _wait_dead(self, state: dict, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(state):
                return True
            await asyncio.sleep(0.05)
        return not self._alive(state)

    async def _stop_process(self, state: dict) -> None:
        pid = state.get("pid")
        if not pid or not self._alive(state):
            self._children.pop(pid, None)
            return
        for sig, timeout in (
            (signal.SIGINT, self.sigint_timeout),
            (signal.SIGTERM, self.sigterm_timeout),
            (signal.SIGKILL, self.sigkill_timeout),
        ):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(pid, sig)
            if await self._wait_dead(state, timeout):
                break
        else:
            self.log.warning("Process %s did not exit after SIGKILL", pid)
        child = self._children.pop(pid, None)
        if child is not None:
            await child.wait()

    def _last_log_lines(self, state: dict, n: int = 5) -> str:
        try:
            with open(state["log"], errors="replace") as f:
                lines = [ln.rstrip() for ln in f.readlines()[-n:]]
            return " | ".join(ln for ln in lines if ln)
        except (KeyError, OSError):
            return ""

    # --- the contract -------------------------------------------------------------------
    async def start_cluster(self, cluster, env):
        workdir, cert, key = self._prepare_workdir(cluster)
        full_env = {
            **self._base_env(),
            **cluster.config.get("environment", {}),
            **env,
            **self.tls_env("scheduler", cert, key),
        }
        if self.socket_handoff:
            # Abstract namespace: no path length limit; the random name and a uid check on
            # both ends (proxy/handoff.py) keep other users out.
            full_env["JHDG_HANDOFF_SOCKET"] = f"@jhdg-handoff-{secrets.token_hex(16)}"
        log = os.path.join(workdir, "logs", "scheduler.log")
        state = await self._launch(self.scheduler_command(cluster), full_env, workdir, log)
        state["workdir"] = workdir
        if self.socket_handoff:
            state["handoff_socket"] = full_env["JHDG_HANDOFF_SOCKET"]
        return state

    def handoff_socket(self, cluster) -> str:
        return cluster.state.get("handoff_socket", "") if self.socket_handoff else ""

    async def stop_cluster(self, cluster):
        await self._stop_process(cluster.state)
        # Workers were stopped by the reconciler first; stragglers in the work dir are
        # found by their recorded states there, so removing the directory is safe now.
        workdir = cluster.state.get("workdir")
        if workdir and os.path.isdir(workdir):
            shutil.rmtree(os.path.join(workdir, ".certs"), ignore_errors=True)

    async def start_worker(self, cluster, worker, env):
        workdir, cert, key = self._prepare_workdir(cluster)
        full_env = {
            **self._base_env(),
            **cluster.config.get("environment", {}),
            **env,
            **self.tls_env("worker", cert, key),
        }
        log = os.path.join(workdir, "logs", f"worker-{worker.name}.log")
        return await self._launch(self.worker_command(cluster, worker), full_env, workdir, log)

    async def stop_worker(self, cluster, worker):
        await self._stop_process(worker.state)

    async def check_clusters(self, clusters):
        out = []
        for c in clusters:
            alive = self._alive(c.state)
            out.append((alive, "" if alive else self._exit_reason("Scheduler", c.state)))
        return out

    async def check_workers(self, cluster, workers):
        out = []
        for w in workers:
            alive = self._alive(w.state)
            out.append((alive, "" if alive else self._exit_reason("Worker", w.state)))
        return out

    def _exit_reason(self, what: str, state: dict) -> str:
        child = self._children.get(state.get("pid"))
        code = f" with status {child.returncode}" if child and child.returncode is not None else ""
        tail = self._last_log_lines(state)
        return f"{what} process exited{code}" + (f": {tail}" if tail else "")
