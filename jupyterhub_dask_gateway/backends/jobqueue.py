"""Job-queue backends: schedulers and workers run as batch jobs of an HPC queue.

This module owns what every queue shares: the per-cluster staging directory (the
cluster's TLS key pair, one environment file per job, the jobs' logs), the job
script, running the queue's commands as subprocesses (never blocking the event
loop, always with a timeout), batching status queries, and turning a job's final
state into a reason a user can read. The state each start returns is
``{"job_id", "staging_dir"}``: enough for a restarted gateway to check on, or
cancel, every job it submitted.

Subclasses (``slurm``, ``pbs``) supply the command lines and parse their output:
``submit_args``, ``parse_job_id``, ``status_args``, ``parse_status``,
``cancel_args``, ``cancel_error_is_harmless`` and, optionally,
``lookup_finished`` for jobs the queue no longer lists. When to start, stop or
check anything is the reconciler's decision, not this module's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass

from traitlets import Any, Integer, List, Unicode, default
from traitlets import Float as FloatTrait

from ..accounts import read_tail_as_root
from ..addresses import resolve
from ..errors import BackendError, GatewayError
from . import staging
from .base import Backend, ClusterConfig

__all__ = [
    "JobInfo",
    "JobQueueBackend",
    "JobQueueClusterConfig",
    "JobRequest",
    "CommandResult",
    "parse_memory_mb",
]

# Written into every staging directory; only directories holding it are ever deleted,
# so a mistaken staging_directory template cannot make the gateway remove a home.
STAGING_MARKER = ".jupyterhub-dask-gateway-staging"
CERT_FILE = "dask.crt"
KEY_FILE = "dask.pem"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_memory_mb(nbytes: int) -> int:
    """Bytes to whole MiB, rounded up (queues count memory in MiB, never below 1)."""
    return max(1, -(-int(nbytes) // 2**20))


@dataclass(frozen=True)
class JobInfo:
    """What the queue says about one job."""

    job_id: str
    alive: bool
    state: str  # the queue's own word for it: RUNNING, TIMEOUT, R, F, ...
    reason: str = ""  # the queue's explanation, if it gave one
    pending: bool = False  # alive but not started yet


@dataclass
class JobRequest:
    """Everything a subclass needs to build one submission's command line."""

    role: str  # "scheduler" or "worker"
    job_name: str
    username: str
    staging_dir: str
    log_path: str
    cores: int
    memory: int  # bytes
    config: dict  # the cluster's serialised ClusterConfig


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    def message(self, limit: int = 2000) -> str:
        """The queue's own words: stderr (or stdout) on one line, bounded."""
        text = self.stderr.strip() or self.stdout.strip() or f"exit status {self.returncode}"
        text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
        return text if len(text) <= limit else text[: limit - 3] + "..."


class JobQueueClusterConfig(ClusterConfig):
    """Per-cluster settings shared by the job-queue backends."""

    scheduler_setup = Unicode(
        "",
        help="""Shell lines the scheduler's job script runs before starting the scheduler,
        e.g. ``module load python`` or ``source /opt/dask/bin/activate``. They run with
        ``set -e`` in the staging directory; a failing line fails the job.""",
    ).tag(config=True)
    worker_setup = Unicode(
        "",
        help="""Shell lines each worker's job script runs before starting the worker
        (same rules as ``scheduler_setup``).""",
    ).tag(config=True)
    walltime = Unicode(
        "",
        help="""Time limit of every job of the cluster, in the queue's syntax (Slurm:
        minutes or ``D-HH:MM:SS``; PBS: ``HH:MM:SS``). Empty uses the queue's default.
        When it is reached the queue kills the job and the cluster (or worker) fails with
        the queue's reason.""",
    ).tag(config=True)
    scheduler_extra_directives = List(
        Unicode(),
        help="""Extra submission options for the scheduler's job, exactly as the submit
        command takes them (e.g. ``["--reservation=dask"]``). They come after the
        gateway's own options, so they win where both set the same thing.""",
    ).tag(config=True)
    worker_extra_directives = List(
        Unicode(),
        help="""Extra submission options for every worker's job, e.g. ``["--gres=gpu:1"]``
        for Slurm or ``["-l", "ngpus=1"]`` for PBS; placed after the gateway's own.""",
    ).tag(config=True)


class JobQueueBackend(Backend):
    """Base of the backends that run schedulers and workers as jobs of a batch queue.

    Subclasses implement the queue-specific hooks listed in the module docstring; the
    four contract coroutines and the liveness checks are implemented here.
    """

    _abstract = True

    #: Name of the queue in messages shown to users ("Slurm", "PBS").
    queue_name = "job queue"

    @default("cluster_config_class")
    def _default_cluster_config_class(self):
        return JobQueueClusterConfig

    gateway_state_dir = Unicode(
        help="""The gateway's state directory, the ``{state_dir}`` of
        ``staging_directory``. Set by the gateway (``DaskGateway.state_dir``); defaults to
        the parent application's ``state_dir``, else the current directory."""
    )

    @default("gateway_state_dir")
    def _default_gateway_state_dir(self):
        parent_dir = getattr(self.parent, "state_dir", "") if self.parent is not None else ""
        return str(parent_dir or os.getcwd())

    staging_directory = Unicode(
        help="""Template of each cluster's staging directory, which holds the cluster's
        TLS certificate and key (mode 0600), the jobs' environment files and their logs,
        and is deleted when the cluster stops. Fields: ``{state_dir}``, ``{cluster_name}``,
        ``{username}``, ``{home}`` (the user's home directory). Every job of the cluster
        must be able to read it, so on a multi-node site it must be on a shared
        filesystem. Default: ``{state_dir}/staging/{cluster_name}``, or with a
        ``submit_wrapper`` (jobs run as the user, who cannot enter the gateway's private
        state directory) ``{home}/.dask-gateway/staging/{cluster_name}``.""",
    ).tag(config=True)

    @default("staging_directory")
    def _default_staging_directory(self):
        if self.submit_wrapper:
            return "{home}/.dask-gateway/staging/{cluster_name}"
        return "{state_dir}/staging/{cluster_name}"

    submit_wrapper = List(
        Unicode(),
        help="""Command prefix for submitting and cancelling jobs as the cluster's owner,
        with ``{username}`` replaced, e.g. ``["sudo", "-nu", "{username}"]`` or
        ``["runuser", "-u", "{username}", "--"]``. Empty (the default) submits as the
        gateway's own user: right for a single-user site. With a wrapper and a gateway
        running as root, the staging directory is handed to the user (chown).""",
    ).tag(config=True)

    command_timeout = FloatTrait(
        60,
        min=1,
        help="Seconds to wait for one call of the queue's commands before giving up.",
    ).tag(config=True)

    status_batch_size = Integer(
        500,
        min=1,
        help="Most job ids passed to one status query (the rest go in further calls).",
    ).tag(config=True)

    max_concurrent_commands = Integer(
        8,
        min=1,
        help="Most queue commands (submit, cancel, status) running at the same time.",
    ).tag(config=True)

    inherited_environment = List(
        Unicode(),
        [
            "PATH",
            "HOME",
            "USER",
            "LOGNAME",
            "LANG",
            "LC_ALL",
            "TZ",
            "SLURM_CONF",
            "PBS_CONF_FILE",
            "PBS_DEFAULT",
            "PBS_SERVER",
        ],
        help="""Variables of the gateway's environment the queue's commands see. Nothing
        else is passed on, so the gateway's own secrets (e.g. ``JUPYTERHUB_API_TOKEN``)
        never reach a job whose queue copies the submitter's environment.""",
    ).tag(config=True)

    status_cache_seconds = FloatTrait(
        5,
        min=0,
        help="""Seconds a job state fetched by one check may answer a later one.
        ``check_clusters`` also fetches the states of those clusters' workers, so the
        ``check_workers`` calls of the same pass cost no further queue call; 0 disables.""",
    ).tag(config=True)

    clock = Any(time.monotonic, help="Monotonic clock in seconds (injectable for tests).")

    cancel_attempts = Integer(
        3,
        min=1,
        help="""Attempts to cancel jobs before stopping reports an error (0.5 s, then 1 s,
        ... between them); a failed attempt is usually a controller that is busy.""",
    ).tag(config=True)

    log_tail_lines = Integer(
        5,
        min=0,
        help="Lines of a dead job's log quoted in the reason users see (0 = none).",
    ).tag(config=True)

    # --- hooks for subclasses ------------------------------------------------------------

    def submit_args(self, request: JobRequest) -> list[str]:
        """The submit command's arguments (the job script arrives on stdin)."""
        raise NotImplementedError

    def parse_job_id(self, stdout: str) -> str:
        """The job id from the submit command's output."""
        raise NotImplementedError

    def status_args(self, job_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobInfo]:
        """Jobs the status command reported; raise ``BackendError`` if it failed."""
        raise NotImplementedError

    def cancel_args(self, job_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def cancel_error_is_harmless(self, line: str) -> bool:
        """True for a cancel error meaning the job is already gone."""
        raise NotImplementedError

    def script_preamble(self, request: JobRequest) -> list[str]:
        """Extra lines right after the shebang (e.g. an output redirection)."""
        return []

    async def lookup_finished(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """Final states of jobs the status command no longer lists (e.g. Slurm's sacct)."""
        return {}

    def describe_dead(self, info: JobInfo) -> str:
        """One sentence on why a job is gone."""
        text = f"{self.queue_name} job {info.job_id} ended ({info.state}"
        return text + (f": {info.reason})" if info.reason else ")")

    # --- lifecycle -------------------------------------------------------------------------

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._semaphore = None
        self._batcher = None
        self._recent: dict[str, tuple[float, JobInfo]] = {}
        self._pending: dict[str, str] = {}  # job id -> why the queue holds it back

    def _limiter(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrent_commands)
        return self._semaphore

    def _status_batcher(self) -> _StatusBatcher:
        if self._batcher is None:
            self._batcher = _StatusBatcher(self._query_jobs)
        return self._batcher

    async def setup(self) -> None:
        submit = getattr(self, "submit_command", "")
        if submit and not self.submit_wrapper and shutil.which(submit) is None:
            self.log.warning(
                "%s backend: %r is not on PATH; every cluster will fail to start",
                self.queue_name,
                submit,
            )
        if self.submit_wrapper and "{state_dir}" in self.staging_directory:
            self.log.warning(
                "%s backend: jobs run as their users (submit_wrapper) but staging_directory "
                "%r is inside the gateway's private state directory, which they cannot enter",
                self.queue_name,
                self.staging_directory,
            )
        if self.submit_wrapper and os.geteuid() != 0:
            self.log.warning(
                "%s backend: submit_wrapper is set but the gateway does not run as root, "
                "so staging directories stay owned by the gateway's user; make sure jobs "
                "running as other users can read them",
                self.queue_name,
            )

    async def cleanup(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None

    # --- the contract --------------------------------------------------------------------

    async def start_cluster(self, cluster, env: dict) -> dict:
        staging = await self._stage(cluster)
        cert, key = os.path.join(staging, CERT_FILE), os.path.join(staging, KEY_FILE)
        job_env = {
            **(cluster.config.get("environment") or {}),
            **env,
            **self.tls_env("scheduler", cert, key),
        }
        request = self._request(cluster, "scheduler", f"dask-scheduler-{cluster.name}", staging)
        script = await self._write_job_files(
            request,
            "scheduler",
            job_env,
            self.scheduler_command(cluster),
            cluster.config.get("scheduler_setup", ""),
        )
        try:
            job_id = await self._submit(request, script)
        except BaseException:
            await self._remove_staging(cluster.username, staging)
            raise
        self.log.info(
            "Submitted scheduler of cluster %s as %s job %s", cluster.name, self.queue_name, job_id
        )
        account = await self._account(cluster.username)
        state = {"job_id": job_id, "staging_dir": staging}
        if account is not None:
            state["uid"] = account.pw_uid  # whose files the failure reason may quote
        return state

    async def stop_cluster(self, cluster) -> None:
        state = cluster.state or {}
        job_ids = [state.get("job_id")]
        # workers are normally stopped one by one first; cancelling any left over here
        # (in the same call) makes stopping a cluster complete even if that was skipped
        for worker in cluster.workers.values():
            if not worker.status.done:
                job_ids.append((worker.state or {}).get("job_id"))
        try:
            await self._cancel(cluster.username, [j for j in job_ids if j])
        finally:
            # secrets go even if a job could not be cancelled (it has read them already)
            staging = state.get("staging_dir")
            if not staging:
                try:
                    staging = await self._staging_path(cluster)
                except BackendError:
                    staging = ""
            if staging:
                await self._remove_staging(cluster.username, staging)
        for job_id in job_ids:
            self._pending.pop(job_id, None)
        self.log.info("Stopped %s jobs of cluster %s", self.queue_name, cluster.name)

    async def start_worker(self, cluster, worker, env: dict) -> dict:
        if not _SAFE_NAME.match(worker.name):
            raise BackendError(f"Invalid worker name {worker.name!r}")
        staging = await self._stage(cluster)
        cert, key = os.path.join(staging, CERT_FILE), os.path.join(staging, KEY_FILE)
        job_env = {
            **(cluster.config.get("environment") or {}),
            **env,
            **self.tls_env("worker", cert, key),
        }
        stem = f"worker-{worker.name}"
        request = self._request(cluster, "worker", f"dask-worker-{cluster.name}", staging, stem)
        script = await self._write_job_files(
            request,
            stem,
            job_env,
            self.worker_command(cluster, worker),
            cluster.config.get("worker_setup", ""),
        )
        job_id = await self._submit(request, script)
        self.log.info(
            "Submitted worker %s of cluster %s as %s job %s",
            worker.name,
            cluster.name,
            self.queue_name,
            job_id,
        )
        state = {"job_id": job_id, "staging_dir": staging}
        account = await self._account(cluster.username)
        if account is not None:
            state["uid"] = account.pw_uid
        return state

    async def stop_worker(self, cluster, worker) -> None:
        state = worker.state or {}
        if state.get("job_id"):
            await self._cancel(cluster.username, [state["job_id"]])
        if state.get("staging_dir") and _SAFE_NAME.match(worker.name):
            # the environment file holds the cluster token; the log stays until cluster stop
            await self._staging_op(
                cluster.username,
                {
                    "op": "unlink",
                    "dir": state["staging_dir"],
                    "names": [f"worker-{worker.name}.env"],
                },
                check=False,
            )

    async def check_clusters(self, clusters) -> list[tuple[bool, str]]:
        # the same queue call also fetches these clusters' workers, for the
        # check_workers calls that follow in the same pass
        workers = [
            w.state["job_id"]
            for c in clusters
            for w in c.workers.values()
            if not w.status.done and (w.state or {}).get("job_id")
        ]
        items = [(c.state or {}, "scheduler") for c in clusters]
        return await self._check(items, prefetch=workers)

    async def check_workers(self, cluster, workers) -> list[tuple[bool, str]]:
        items = [(w.state or {}, f"worker-{w.name}") for w in workers]
        return await self._check(items, use_cache=True)

    async def job_host(self, job_id: str) -> str:
        """The address (or name) of the node the queue runs ``job_id`` on; "" if unknown."""
        return ""

    async def confirm_address(self, cluster, ips, port) -> str:
        # The node the queue says the scheduler's job runs on, not what the job claims.
        job_id = (cluster.state or {}).get("job_id")
        host = await self.job_host(job_id) if job_id else ""
        if not host:
            return f"the {self.queue_name} queue does not say where the scheduler's job runs"
        node = await resolve(host)
        if ips <= node:
            return ""
        return (
            f"{', '.join(map(str, sorted(ips, key=str)))} is not the node the job runs on ({host})"
        )

    def _last_log_lines(self, state: dict, n: int = 5) -> str:
        """What the gateway quotes when a scheduler does not start in time: the log's
        last lines, or why the queue still holds the job back."""
        if not state:
            return ""
        tail = ""
        if state.get("staging_dir"):
            tail = _tail(os.path.join(state["staging_dir"], "scheduler.log"), n, state.get("uid"))
        return tail or self._pending.get(state.get("job_id") or "", "")

    # --- staging -------------------------------------------------------------------------

    async def _staging_path(self, cluster) -> str:
        template = self.staging_directory
        home = ""
        if "{home}" in template:
            try:
                entry = await asyncio.to_thread(pwd.getpwnam, cluster.username)
            except KeyError:
                raise BackendError(
                    f"User {cluster.username!r} does not exist on this host"
                ) from None
            home = entry.pw_dir
        try:
            path = template.format(
                state_dir=self.gateway_state_dir,
                cluster_name=cluster.name,
                username=cluster.username,
                home=home,
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise BackendError(f"Invalid staging_directory template {template!r}: {exc}") from None
        path = os.path.expanduser(path)
        if not os.path.isabs(path) or ".." in path.split(os.sep):
            raise BackendError(f"Staging directory {path!r} must be an absolute path")
        return os.path.normpath(path)

    async def _account(self, username: str):
        """The job user's passwd entry when jobs run as someone else and we may chown."""
        if not self.submit_wrapper or os.geteuid() != 0:
            return None
        try:
            return await asyncio.to_thread(pwd.getpwnam, self.account_name(username))
        except KeyError:
            raise BackendError(f"User {username!r} does not exist on this host") from None

    async def _stage(self, cluster) -> str:
        """Create (or refresh) the cluster's staging directory with its key pair."""
        path = cluster.state.get("staging_dir") if cluster.state else None
        path = path or await self._staging_path(cluster)
        account = await self._account(cluster.username)
        if account is not None:
            try:
                await asyncio.to_thread(_make_dirs, path, account)
            except OSError as exc:
                raise BackendError(f"Cannot prepare staging directory {path}: {exc}") from None
        files = {STAGING_MARKER: "", CERT_FILE: cluster.tls_cert, KEY_FILE: cluster.tls_key}
        await self._staging_op(cluster.username, {"op": "write", "dir": path, "files": files})
        return path

    async def _remove_staging(self, username: str, path: str) -> None:
        # Only directories the gateway created (they hold the marker) are ever removed.
        await self._staging_op(
            username, {"op": "remove", "dir": path, "marker": STAGING_MARKER}, check=False
        )

    async def _staging_op(self, username: str, request: dict, check: bool = True) -> None:
        """Do one ``staging.py`` request: as the job's user through the wrapper in
        multi-user mode (root never works inside the user's directory), else here."""
        if await self._account(username) is None:
            try:
                await asyncio.to_thread(staging.run, request)
            except OSError as exc:
                if check:
                    raise BackendError(f"Staging failed in {request['dir']}: {exc}") from None
            return
        argv = self._wrapped(username, [sys.executable, "-I", staging.__file__])
        result = await self._run(argv, stdin=json.dumps(request))
        if result.returncode != 0 and check:
            raise BackendError(
                f"Staging as {username} failed in {request['dir']}: {result.message()}"
            )

    def _request(self, cluster, role, job_name, staging, stem=None) -> JobRequest:
        cfg = cluster.config
        return JobRequest(
            role=role,
            job_name=job_name,
            username=cluster.username,
            staging_dir=staging,
            log_path=os.path.join(staging, f"{stem or role}.log"),
            cores=int(cfg.get(f"{role}_cores", 1)),
            memory=int(cfg.get(f"{role}_memory", 0)),
            config=cfg,
        )

    async def _write_job_files(self, request, stem, env, command, setup) -> str:
        """Write the job's environment file; return its job script (submitted on stdin)."""
        env_path = os.path.join(request.staging_dir, f"{stem}.env")
        text = render_env_file(env, f"{request.role} of {request.job_name}")
        await self._staging_op(
            request.username,
            {"op": "write", "dir": request.staging_dir, "files": {f"{stem}.env": text}},
        )
        return self.job_script(request, env_path, command, setup)

    def job_script(self, request: JobRequest, env_path: str, command, setup: str) -> str:
        """The batch script: enter the staging directory, load the environment, run."""
        lines = [
            "#!/bin/bash",
            f"# {request.role} job written by jupyterhub-dask-gateway ({request.job_name})",
            *self.script_preamble(request),
            "set -e",
            f"cd {shlex.quote(request.staging_dir)}",
            f". {shlex.quote(env_path)}",
        ]
        if setup and setup.strip():
            lines += ["# setup lines from the cluster configuration", setup.rstrip()]
        lines.append("exec " + shlex.join(command))
        return "\n".join(lines) + "\n"

    # --- running the queue's commands --------------------------------------------------------

    def _environment(self) -> dict:
        env = {k: os.environ[k] for k in self.inherited_environment if k in os.environ}
        env.setdefault("PATH", os.defpath)
        return env

    def _wrapped(self, username: str, argv: list[str]) -> list[str]:
        account = self.account_name(username)  # c.Backend.user_accounts
        return [part.replace("{username}", account) for part in self.submit_wrapper] + argv

    async def _run(self, argv: list[str], stdin: str | None = None) -> CommandResult:
        """Run one queue command with a timeout; the loop never blocks on it."""
        async with self._limiter():
            self.log.debug("Running %s", shlex.join(argv))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE
                    if stdin is not None
                    else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self._environment(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise BackendError(f"Cannot run {argv[0]}: {exc.strerror or exc}") from None
            try:
                out, err = await asyncio.wait_for(
                    proc.communicate(stdin.encode() if stdin is not None else None),
                    self.command_timeout,
                )
            except TimeoutError:
                await _kill(proc)
                raise BackendError(
                    f"{argv[0]} did not answer within {self.command_timeout:g} s"
                ) from None
            except BaseException:
                await _kill(proc)
                raise
            return CommandResult(
                proc.returncode,
                out.decode(errors="replace"),
                err.decode(errors="replace"),
            )

    async def _submit(self, request: JobRequest, script: str) -> str:
        argv = self._wrapped(request.username, [self.submit_command, *self.submit_args(request)])
        result = await self._run(argv, stdin=script)
        if result.returncode != 0:
            raise BackendError(
                f"{self.queue_name} rejected the {request.role} job: {result.message()}"
            )
        return self.parse_job_id(result.stdout)

    async def _cancel(self, username: str, job_ids: list[str]) -> None:
        for chunk in _chunks(job_ids, self.status_batch_size):
            argv = self._wrapped(username, [self.cancel_command, *self.cancel_args(chunk)])
            for attempt in range(self.cancel_attempts):
                if attempt:
                    # a controller restarting or overloaded usually answers a moment later
                    await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 5))
                try:
                    result = await self._run(argv)
                except BackendError as exc:
                    error = exc
                    continue
                lines = [
                    ln for ln in (result.stderr + "\n" + result.stdout).splitlines() if ln.strip()
                ]
                if result.returncode == 0 or all(map(self.cancel_error_is_harmless, lines)):
                    break
                error = BackendError(
                    f"{self.queue_name} could not cancel job(s) {', '.join(chunk)}: "
                    f"{result.message()}"
                )
            else:
                raise error

    async def _query_jobs(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One status call per batch of ids; ids it no longer lists are looked up or gone."""
        found: dict[str, JobInfo] = {}
        for chunk in _chunks(job_ids, self.status_batch_size):
            argv = [self.status_command, *self.status_args(chunk)]
            result = await self._run(argv)
            found.update(match_job_ids(chunk, self.parse_status(result, chunk)))
        missing = [j for j in job_ids if j not in found]
        if missing:
            try:
                found.update(match_job_ids(missing, await self.lookup_finished(missing)))
            except GatewayError as exc:
                self.log.debug("Finished-job lookup failed: %s", exc)
        for job_id in job_ids:
            if job_id not in found:
                found[job_id] = JobInfo(job_id, False, "UNKNOWN", "no longer known to the queue")
        return found

    async def _check(
        self, items: list[tuple[dict, str]], use_cache: bool = False, prefetch=()
    ) -> list[tuple[bool, str]]:
        wanted = sorted({state["job_id"] for state, _ in items if state.get("job_id")})
        now = self.clock()
        self._recent = {
            j: (t, info)
            for j, (t, info) in self._recent.items()
            if now - t <= self.status_cache_seconds
        }
        infos = {j: self._recent[j][1] for j in wanted if use_cache and j in self._recent}
        to_query = [j for j in wanted if j not in infos]
        if to_query:
            to_query += sorted(set(prefetch) - set(to_query))
            try:
                fetched = await self._status_batcher().query(to_query)
            except GatewayError as exc:
                # an unreachable queue says nothing about the jobs: keep them
                self.log.warning("Could not query %s for job states: %s", self.queue_name, exc)
                return [(True, "")] * len(items)
            if self.status_cache_seconds:
                self._recent.update((j, (now, info)) for j, info in fetched.items())
            infos.update(fetched)
        out = []
        for state, stem in items:
            job_id = state.get("job_id")
            if not job_id:
                out.append((False, f"no {self.queue_name} job was submitted"))
                continue
            info = infos[job_id]
            if info.alive:
                # informational only: why a job waits helps explain a start timeout
                note = ""
                if info.pending and info.reason:
                    note = f"{self.queue_name} job {job_id} is pending: {info.reason}"
                    self._pending[job_id] = note
                else:
                    self._pending.pop(job_id, None)
                out.append((True, note))
                continue
            self._pending.pop(job_id, None)
            reason = self.describe_dead(info)
            if state.get("staging_dir") and self.log_tail_lines:
                log_path = os.path.join(state["staging_dir"], f"{stem}.log")
                tail = await asyncio.to_thread(
                    _tail, log_path, self.log_tail_lines, state.get("uid")
                )
                if tail:
                    reason += f". Last lines of {log_path}: {tail}"
            out.append((False, reason))
        return out


class _StatusBatcher:
    """Coalesces concurrent status queries into as few queue calls as possible.

    Ids asked for while a query runs wait for the next one, which then covers every
    caller at once; ``check_clusters`` and all the ``check_workers`` calls of one
    reconciler pass therefore cost one ``squeue``/``qstat`` call, not one per cluster.
    """

    def __init__(self, fetch):
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        loop = asyncio.get_running_loop()
        futures = {}
        for job_id in job_ids:
            fut = loop.create_future()
            self._waiting.setdefault(job_id, []).append(fut)
            futures[job_id] = fut
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        results = await asyncio.gather(*futures.values())
        return dict(zip(futures, results, strict=True))

    async def _drain(self) -> None:
        # yield once so queries made in the same loop iteration join the first batch
        await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                result = await self._fetch(list(batch))
            except Exception as exc:
                _settle(batch, lambda fut, _id, exc=exc: fut.set_exception(exc))
                continue
            except BaseException:
                _settle(batch, lambda fut, _id: fut.cancel())
                raise
            _settle(batch, lambda fut, job_id, result=result: fut.set_result(result[job_id]))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for futs in self._waiting.values():
            for fut in futs:
                fut.cancel()
        self._waiting = {}


def _settle(batch: dict, action) -> None:
    for job_id, futs in batch.items():
        for fut in futs:
            if not fut.done():
                action(fut, job_id)


# --- pure helpers (tested directly) ----------------------------------------------------------


def render_env_file(env: dict, what: str) -> str:
    """``export NAME=value`` lines, values quoted for the shell."""
    lines = [f"# environment of the {what}; holds the cluster token, keep it private"]
    for name, value in env.items():
        if not _ENV_NAME.match(str(name)):
            raise BackendError(f"Invalid environment variable name {name!r}")
        lines.append(f"export {name}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"


def match_job_ids(requested: list[str], reported: dict[str, JobInfo]) -> dict[str, JobInfo]:
    """Map the queue's ids back to ours: exactly, or by the part before the first dot
    (PBS may answer ``12.server.example.org`` for the ``12.server`` that qsub printed)."""
    out = {}
    by_number = {}
    for job_id, info in reported.items():
        by_number.setdefault(job_id.split(".", 1)[0], info)
    for job_id in requested:
        info = reported.get(job_id) or by_number.get(job_id.split(".", 1)[0])
        if info is not None:
            out[job_id] = dataclasses.replace(info, job_id=job_id)
    return out


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _kill(proc) -> None:
    """Kill a command and everything it started (it leads its own session)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        await proc.wait()


# --- blocking file helpers, always called through asyncio.to_thread -----------------------------


def _make_dirs(path: str, account) -> None:
    """Create what of ``path`` root may create for a job user: components in directories
    root owns. The walk opens every existing component with ``O_NOFOLLOW`` (a link
    anywhere fails) and stops at the first directory the user owns: the user creates the
    rest (``staging.py`` through the wrapper). A component owned by anyone else fails.
    New parents are 0711 (passable, not listable); the staging directory itself is
    created 0700 and handed to the user."""
    parts = [p for p in os.path.normpath(path).split(os.sep) if p]
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            owner = os.fstat(fd).st_uid
            if owner == account.pw_uid:
                return  # the user's own directory: the rest is theirs to create
            if owner != 0:
                raise OSError(f"{os.sep.join(parts[:i]) or '/'} belongs to uid {owner}")
            try:
                os.mkdir(part, 0o700 if last else 0o711, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            if created and last:
                os.fchown(fd, account.pw_uid, account.pw_gid)
        info = os.fstat(fd)
        if info.st_uid not in (0, account.pw_uid):
            raise OSError(f"{path} belongs to uid {info.st_uid}")
        if info.st_uid == 0:
            os.fchown(fd, account.pw_uid, account.pw_gid)
    finally:
        os.close(fd)


def _tail(path: str, lines: int, owner: int | None = None) -> str:
    """The last non-empty lines of a log, joined with " | " (bounded read).

    With ``owner`` (multi-user mode: the directory is the user's) the read follows no
    link and takes only a regular file of that uid (``accounts.read_tail_as_root``).
    """
    if owner is not None:
        data = read_tail_as_root(os.path.dirname(path), os.path.basename(path), owner)
    else:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
    kept = [ln.strip() for ln in data.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)
