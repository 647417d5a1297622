"""The embedded default backend: schedulers and workers as local processes.

Each cluster runs as its owner's own system account when the gateway runs as
root (the default there; ``user_accounts`` maps names), with that account's
groups, home and a clean environment; a gateway that cannot switch users refuses
to start unless ``unsafe_shared_account`` says that one account for everyone is
intended. Every process runs in its own session (so it outlives the gateway and
can be signalled as a group), in a 0700 working directory per cluster, owned by
the account, holding the cluster's key pair (0600) and one log file per
process. The gateway writes into that directory only while creating it, before
handing it over. Stops climb the ladder SIGINT → SIGTERM → SIGKILL. Every
process starts through ``warm.py``, which drops to the account; a small pool of
pre-imported launchers makes that take milliseconds instead of the ~1.5 s Python
needs to import distributed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections import OrderedDict

import psutil
from traitlets import Bool, Float, Integer, List, Unicode, default

from ..accounts import (
    Account,
    blocked_for_others,
    clean_environment,
    lookup_account,
    read_tail_as_root,
)
from ..addresses import join_hostport
from ..errors import BackendError, CannotStart, StartupError
from ..files import write_private
from .base import Backend, tail_summary

_LAUNCHER = "jupyterhub_dask_gateway.backends.warm"


class LocalBackend(Backend):
    """Runs clusters as subprocesses of the gateway's own Python environment (or ``python``)."""

    _abstract = False

    #: the scheduler may notice a killed worker before its process has been reaped
    departure_check_seconds = 2.0

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

    unsafe_shared_account = Bool(
        False,
        help="""Run every user's clusters as the gateway's own account. Only for a
        single-user or development install: users can then read each other's clusters
        and the gateway's state (its database, encryption key and tokens) with code they
        run on their schedulers. Without it, a gateway that is not root (and so cannot
        switch users) refuses to start.""",
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
        return os.path.join(self.gateway_state_dir, "clusters")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pool: list[asyncio.subprocess.Process] = []
        self._children: dict[int, asyncio.subprocess.Process] = {}
        # log path -> the first bytes a cold launcher wrote before its log was open.
        self._early_output: OrderedDict[str, bytes] = OrderedDict()
        self._refill_task: asyncio.Task | None = None
        self._closing = False

    @property
    def per_user(self) -> bool:
        """Whether clusters run as their owners' accounts (root, not shared-account mode)."""
        return os.geteuid() == 0 and not self.unsafe_shared_account

    # --- lifecycle ----------------------------------------------------------------------
    async def setup(self):
        if os.geteuid() != 0 and not self.unsafe_shared_account:
            raise StartupError(
                "The local backend runs each user's clusters as that user's own account, "
                f"which needs root; this gateway runs as uid {os.geteuid()}. Run it as root, "
                "or set c.LocalBackend.unsafe_shared_account = True to run every cluster as "
                "this account (single-user or development installs only: users' code could "
                "then read each other's clusters and the gateway's secrets)."
            )
        if self.per_user:
            state_dir = os.path.abspath(self.gateway_state_dir)
            if os.path.dirname(os.path.abspath(self.clusters_directory)) == state_dir:
                # The gateway's own state dir: accounts may pass through it to their work
                # dirs, never list or read it (its files are 0600).
                os.chmod(state_dir, 0o711)
            self._check_reachable()
            os.makedirs(self.clusters_directory, mode=0o711, exist_ok=True)
            os.chmod(self.clusters_directory, 0o711)
        else:
            self.log.warning(
                "LocalBackend.unsafe_shared_account: every cluster runs as %s; users are not "
                "isolated from each other or from the gateway's state",
                "root" if os.geteuid() == 0 else f"uid {os.geteuid()}",
            )
            os.makedirs(self.clusters_directory, mode=0o700, exist_ok=True)
        self._schedule_refill()

    def _check_reachable(self):
        """Users' processes must reach their work dirs and execute the cluster Python."""
        parent = os.path.dirname(os.path.abspath(self.clusters_directory))
        blocked = blocked_for_others(parent)
        if blocked:
            raise StartupError(
                f"Users' clusters could not reach their working directories under "
                f"{self.clusters_directory}: other accounts cannot enter {blocked}. Set "
                "c.LocalBackend.clusters_directory (or DaskGateway.state_dir) to a place "
                "every account can traverse."
            )
        python = self.cluster_config_class(parent=self).python
        if python != sys.executable:
            return  # another environment: the admin's to provide (a start failure says so)
        for path in {python, sys.prefix, os.path.dirname(os.__file__)}:
            blocked = blocked_for_others(path, need_read=True)
            if blocked:
                raise StartupError(
                    f"Users' clusters could not run {python}: other accounts cannot read "
                    f"{blocked}. Install the gateway in an environment every account can "
                    "execute (scripts/setup.sh makes one under /opt), or set "
                    "c.ClusterConfig.python to one."
                )

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
            except TimeoutError:
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
                proc = await self._start_launcher(sys.executable)
            except OSError:
                self.log.warning("Could not start a warm interpreter", exc_info=True)
                return
            self._pool.append(proc)

    async def _start_launcher(self, python: str, log: str = "") -> asyncio.subprocess.Process:
        # The environment is the inherited allow-list only: nothing of the gateway's
        # (its Hub token, the proxy token) ever reaches a process a user will own.
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            _LAUNCHER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if log else asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=clean_environment(self.inherited_environment),
            cwd="/",
        )
        if log:
            # Another Python (ClusterConfig.python) may fail before the launcher has
            # moved its output into the user's log (a broken environment, a missing
            # module): keep the start of what it printed, under the log's name, for the
            # failure's reason and the logs endpoint.
            self._early_output[log] = b""
            while len(self._early_output) > EARLY_OUTPUT_KEPT:
                self._early_output.popitem(last=False)
            asyncio.get_running_loop().create_task(self._keep_early_output(proc, log))
        return proc

    async def _why_it_exited(self, proc, python: str, module: str, log: str) -> str:
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            pass
        await asyncio.sleep(0)  # let the reader take the last of its output
        early = self._early_output.get(log, b"")
        tail = tail_summary(early.decode(errors="replace"))
        code = describe_exit(proc.returncode) if proc.returncode is not None else ""
        return f"{python} exited{code} before it could start {module}" + (
            f": {tail}" if tail else ""
        )

    async def _keep_early_output(self, proc: asyncio.subprocess.Process, log: str) -> None:
        while len(self._early_output.get(log, b"")) < EARLY_OUTPUT_LIMIT:
            chunk = await proc.stderr.read(4096)
            if not chunk or log not in self._early_output:
                break
            self._early_output[log] = (self._early_output[log] + chunk)[:EARLY_OUTPUT_LIMIT]

    # --- process helpers ----------------------------------------------------------------
    def _workdir(self, cluster) -> str:
        return os.path.join(self.clusters_directory, cluster.name)

    async def _account(self, username: str) -> Account | None:
        if not self.per_user:
            return None
        # pwd/grp may ask the network (LDAP, SSSD): off the event loop.
        return await asyncio.to_thread(lookup_account, self.account_name(username), username)

    def _create_workdir(self, cluster, account: Account | None) -> str:
        """A fresh working directory with the key pair, handed to ``account`` last.

        Everything is created inside a directory nobody else can enter yet, and
        the gateway never writes into it again: from then on it is the user's.
        """
        workdir = self._workdir(cluster)
        if os.path.lexists(workdir):
            # A retried start: clear what a previous attempt left (fd-based, no links followed).
            shutil.rmtree(workdir)
        os.mkdir(workdir, 0o700)
        for sub in ("logs", ".certs"):
            os.mkdir(os.path.join(workdir, sub), 0o700)
        owner = (account.uid, account.gid) if account is not None else None
        for name, data in (("dask.crt", cluster.tls_cert), ("dask.pem", cluster.tls_key)):
            path = os.path.join(workdir, ".certs", name)
            write_private(path, data, exclusive=True, owner=owner)
        if account is not None:
            for sub in ("logs", ".certs", ""):
                os.lchown(os.path.join(workdir, sub), account.uid, account.gid)
        return workdir

    def _log_path(self, cluster, worker=None) -> str:
        name = "scheduler.log" if worker is None else f"worker-{worker.name}.log"
        return os.path.join(self._workdir(cluster), "logs", name)

    def _tls_paths(self, workdir: str) -> tuple[str, str]:
        certs = os.path.join(workdir, ".certs")
        return os.path.join(certs, "dask.crt"), os.path.join(certs, "dask.pem")

    def _process_env(self, cluster, env: dict, account: Account | None, role: str, workdir):
        return clean_environment(
            self.inherited_environment,
            account=account,
            # Spill and scratch space in the cluster's own directory: a shared
            # /tmp/dask-scratch-space would belong to whichever user made it first.
            defaults={"DASK_TEMPORARY_DIRECTORY": workdir},
            cluster=cluster.config.get("environment"),
            manager=env,
            tls=self.tls_env(role, *self._tls_paths(workdir)),
        )

    async def _launch(self, argv, env, cwd, log, account: Account | None) -> dict:
        """Start ``argv`` (``python -m module args``) as ``account``, through the launcher."""
        python, _, module, *args = argv
        request = {
            "module": module,
            "argv": args,
            "env": env,
            "cwd": cwd,
            "log": log,
            "account": account.to_dict() if account else None,
        }
        line = json.dumps(request).encode() + b"\n"
        proc = None
        if python == sys.executable:
            while self._pool and proc is None:
                candidate = self._pool.pop(0)
                if candidate.returncode is None and await self._send(candidate, line):
                    proc = candidate
            self._schedule_refill()
        if proc is None:
            try:
                proc = await self._start_launcher(python, log=log)
            except OSError as exc:
                raise BackendError(f"Could not start {python}: {exc}") from None
            if not await self._send(proc, line):
                raise CannotStart(await self._why_it_exited(proc, python, module, log))
        self._children[proc.pid] = proc
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            created = time.time()
        state = {"pid": proc.pid, "create_time": created, "log": log}
        if account is not None:
            state["uid"] = account.uid
        return state

    @staticmethod
    async def _send(proc: asyncio.subprocess.Process, line: bytes) -> bool:
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

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
            if "uid" in state and p.uids().real != state["uid"]:
                return False  # not the account we started it as: not ours
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

    def _read_log(self, state: dict, lines: int) -> str:
        """The last lines of the log a process was started with (its ``state["log"]``)."""
        log = state.get("log", "")
        workdir = os.path.dirname(os.path.dirname(log))  # <workdir>/logs/<name>.log
        if not log or os.path.abspath(os.path.dirname(workdir)) != os.path.abspath(
            self.clusters_directory
        ):
            return ""
        # The log is in the user's directory: read it as something the user controls.
        owner = state.get("uid", os.geteuid())
        return read_tail_as_root(workdir, os.path.relpath(log, workdir), owner, lines=lines)

    # --- the contract -------------------------------------------------------------------
    async def check_owner(self, username):
        await self._account(username)

    async def start_cluster(self, cluster, env):
        account = await self._account(cluster.username)
        workdir = self._create_workdir(cluster, account)
        full_env = self._process_env(cluster, env, account, "scheduler", workdir)
        if self.socket_handoff:
            # Abstract namespace: no path length limit. Anyone may bind a name they
            # guess, so the proxy checks the listener's uid and pid (proxy/handoff.py).
            full_env["JHDG_HANDOFF_SOCKET"] = f"@jhdg-handoff-{secrets.token_hex(16)}"
            full_env["JHDG_HANDOFF_PEER_UID"] = str(os.getuid())
        log = self._log_path(cluster)
        argv = self.scheduler_command(cluster)
        state = await self._launch(argv, full_env, workdir, log, account)
        state["workdir"] = workdir
        if self.socket_handoff:
            state["handoff_socket"] = full_env["JHDG_HANDOFF_SOCKET"]
        return state

    async def confirm_address(self, cluster, ips, port) -> str:
        # A port this cluster's scheduler process listens on, on an address of this host.
        pid = cluster.state.get("pid")
        if not pid or not self._alive(cluster.state):
            return "the scheduler process is not running"
        try:
            listening = await asyncio.to_thread(_listening, pid)
            local = await asyncio.to_thread(_local_addresses)
        except psutil.Error as exc:
            return f"cannot inspect the scheduler process: {exc}"
        for ip in ips:
            if not (ip.is_loopback or ip in local):
                return f"{ip} is not an address of this host"
            if (ip, port) not in listening and (None, port) not in listening:
                return f"the scheduler process does not listen on {join_hostport(str(ip), port)}"
        return ""

    def handoff_target(self, cluster) -> dict:
        state = cluster.state
        if not (self.socket_handoff and state.get("handoff_socket") and state.get("pid")):
            return {}
        return {"path": state["handoff_socket"], "uid": state.get("uid"), "pid": state["pid"]}

    async def stop_cluster(self, cluster):
        await self._stop_process(cluster.state)
        # Workers were stopped by the reconciler first, so the key pair can go; the logs
        # stay. The directory is the user's: rmtree is fd-based and refuses a link.
        workdir = cluster.state.get("workdir")
        if workdir and os.path.isdir(workdir):
            shutil.rmtree(os.path.join(workdir, ".certs"), ignore_errors=True)

    async def start_worker(self, cluster, worker, env):
        account = await self._account(cluster.username)
        workdir = cluster.state.get("workdir") or self._workdir(cluster)
        full_env = self._process_env(cluster, env, account, "worker", workdir)
        log = self._log_path(cluster, worker)
        argv = self.worker_command(cluster, worker)
        return await self._launch(argv, full_env, workdir, log, account)

    async def stop_worker(self, cluster, worker):
        await self._stop_process(worker.state)

    async def check_clusters(self, clusters):
        return [await self._liveness(c) for c in clusters]

    async def check_workers(self, cluster, workers):
        return [await self._liveness(cluster, w) for w in workers]

    async def log_tail(self, cluster, worker=None, lines=50) -> str:
        state = (cluster.state if worker is None else worker.state) or {}
        text = await asyncio.to_thread(self._read_log, state, lines)
        log = state.get("log") or self._log_path(cluster, worker)
        early = self._early_output.get(log, b"")
        if early and not text.strip():
            return "\n".join(early.decode(errors="replace").splitlines()[-lines:])
        return text

    async def _liveness(self, cluster, worker=None) -> tuple[bool, str]:
        state = (cluster.state if worker is None else worker.state) or {}
        if self._alive(state):
            return True, ""
        child = self._children.get(state.get("pid"))
        if child is not None and child.returncode is None:
            # Just died: the child watcher has not reaped it yet.
            try:
                await asyncio.wait_for(child.wait(), 1)
            except TimeoutError:
                pass
        code = describe_exit(child.returncode) if child and child.returncode is not None else ""
        tail = tail_summary(await self.log_tail(cluster, worker, lines=5))
        what = "Scheduler" if worker is None else "Worker"
        return False, f"{what} process exited{code}" + (f": {tail}" if tail else "")


# How much of a cold launcher's early output is kept (per process, until it is stopped).
EARLY_OUTPUT_LIMIT = 16 * 1024
# ... and for how many processes (the most recent): a bound on the memory it takes.
EARLY_OUTPUT_KEPT = 256


def describe_exit(returncode: int) -> str:
    """`` with status 1`` or `` killed by SIGKILL (signal 9)`` for a child's return code."""
    if returncode >= 0:
        return f" with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "a signal"
    return f" killed by {name} (signal {-returncode})"


def _listening(pid: int) -> set:
    """``(ip, port)`` of every TCP socket ``pid`` listens on (``(None, port)``: any address)."""
    out = set()
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        ip = ipaddress.ip_address(conn.laddr.ip.split("%")[0])
        out.add((None if ip.is_unspecified else ip, conn.laddr.port))
    return out


def _local_addresses() -> set:
    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(ipaddress.ip_address(a.address.split("%")[0]))
    return out
