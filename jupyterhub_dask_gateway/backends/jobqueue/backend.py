"""``JobQueueBackend``: the backend contract, for every queue, on top of a few hooks.

It stages each cluster's files, writes and submits the job scripts, cancels jobs,
checks on them through batched status queries and turns a job's final state into a
reason a user can read. A queue's subclass (``slurm``, ``pbs``) supplies its command
lines and reads their output; the records and pure helpers are ``jobs``, running the
commands is ``commands``, what root creates for a job's user is ``directories``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shlex
import shutil
import sys
import time

from traitlets import Any, Integer, List, Unicode, default
from traitlets import Float as FloatTrait

from ...accounts import clean_environment, lookup_account, read_tail_as_root
from ...addresses import resolve
from ...errors import BackendError, GatewayError
from .. import staging
from ..base import Backend, tail_summary
from .commands import StatusBatcher, chunks, run_command
from .directories import make_staging_dirs
from .jobs import (
    CERT_FILE,
    KEY_FILE,
    STAGING_MARKER,
    CommandResult,
    JobInfo,
    JobQueueClusterConfig,
    JobRequest,
    match_job_ids,
    render_env_file,
)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def queue_command(default_value: str, what: str = "") -> Unicode:
    """The config trait naming one of a queue's executables (for the subclasses)."""
    return Unicode(
        default_value,
        help=f"The {default_value} executable{what} (a name on PATH or an absolute path).",
    ).tag(config=True)


class JobQueueBackend(Backend):
    """Base of the backends that run schedulers and workers as jobs of a batch queue.

    Subclasses set ``submit_command``, ``status_command`` and ``cancel_command`` and
    implement the hooks below (``submit_args``, ``parse_job_id``, ``status_args``,
    ``parse_status``, ``cancel_args``, ``cancel_error_is_harmless``; optionally
    ``script_preamble``, ``lookup_finished``, ``describe_dead``, ``job_host``); the four
    contract coroutines, the liveness checks and ``log_tail`` are implemented here.
    The state each start returns is ``{"job_id", "staging_dir"}`` (and ``"uid"``, whose
    files a failure reason may quote, in multi-user mode): enough for a restarted
    gateway to check on, or cancel, every job it submitted.
    """

    _abstract = True

    #: Name of the queue in messages shown to users ("Slurm", "PBS").
    queue_name = "job queue"

    @default("cluster_config_class")
    def _default_cluster_config_class(self):
        return JobQueueClusterConfig

    submit_command = Unicode(
        help="""The queue's submit executable (a name on PATH or an absolute path); each
        queue's backend sets its own default (Slurm: sbatch, PBS: qsub).""",
    ).tag(config=True)
    status_command = Unicode(
        help="""The queue's job status executable (Slurm: squeue, PBS: qstat).""",
    ).tag(config=True)
    cancel_command = Unicode(
        help="""The queue's job cancelling executable (Slurm: scancel, PBS: qdel).""",
    ).tag(config=True)

    staging_directory = Unicode(
        help="""Template of each cluster's staging directory, which holds the cluster's
        TLS certificate and key (mode 0600), the jobs' environment files and their logs,
        and is deleted when the cluster stops. Fields: ``{state_dir}`` (the gateway's,
        ``DaskGateway.state_dir``), ``{cluster_name}``, ``{username}``, ``{home}`` (the
        home directory of the user's account). Every job of the cluster must be able
        to read it, so on a multi-node site it must be on a shared filesystem. Default:
        ``{state_dir}/staging/{cluster_name}``, or with a ``submit_wrapper`` (jobs run as
        the user, who cannot enter the gateway's private state directory)
        ``{home}/.dask-gateway/staging/{cluster_name}``.""",
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

    async def job_host(self, job_id: str) -> str:
        """The address (or name) of the node the queue runs ``job_id`` on; "" if unknown."""
        return ""

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

    def _status_batcher(self) -> StatusBatcher:
        if self._batcher is None:
            self._batcher = StatusBatcher(self._query_jobs)
        return self._batcher

    async def setup(self) -> None:
        submit = self.submit_command
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

    async def check_owner(self, username: str) -> None:
        # With a wrapper the jobs run as the user's account: it must exist and not be
        # root (docs/security.md), as for the local backend. Without, they are ours.
        if self.submit_wrapper:
            await asyncio.to_thread(lookup_account, self.account_name(username), username)

    async def start_cluster(self, cluster, env: dict) -> dict:
        return await self._start_job(cluster, None, env, self.scheduler_command(cluster))

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
        if not _stem(worker):
            raise BackendError(f"Invalid worker name {worker.name!r}")
        return await self._start_job(cluster, worker, env, self.worker_command(cluster, worker))

    async def stop_worker(self, cluster, worker) -> None:
        state = worker.state or {}
        if state.get("job_id"):
            await self._cancel(cluster.username, [state["job_id"]])
        if state.get("staging_dir") and _stem(worker):
            # the environment file holds the cluster token; the log stays until cluster stop
            await self._staging_op(
                cluster.username,
                {"op": "unlink", "dir": state["staging_dir"], "names": [f"{_stem(worker)}.env"]},
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
        items = [(c.state or {}, _stem(None)) for c in clusters]
        return await self._check(items, prefetch=workers)

    async def check_workers(self, cluster, workers) -> list[tuple[bool, str]]:
        items = [(w.state or {}, _stem(w)) for w in workers]
        return await self._check(items, use_cache=True)

    async def log_tail(self, cluster, worker=None, lines: int = 50) -> str:
        """The job's log (``<staging>/<scheduler|worker-NAME>.log``) or, before the job
        has written any, why the queue still holds it back (from the last check)."""
        state = (cluster.state if worker is None else worker.state) or {}
        text = await self._read_log(state, _stem(worker), lines)
        return text or self._pending.get(state.get("job_id") or "", "")

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

    # --- jobs ------------------------------------------------------------------------------

    async def _start_job(self, cluster, worker, env: dict, command: list[str]) -> dict:
        """Stage, write the environment file, submit: the scheduler's job (``worker``
        None) or one worker's. Returns the state to keep."""
        role = "scheduler" if worker is None else "worker"
        stem = _stem(worker)
        staging = await self._stage(cluster)
        cfg = cluster.config
        job_env = clean_environment(
            cluster=cfg.get("environment"),
            manager=env,
            tls=self.tls_env(role, *(os.path.join(staging, f) for f in (CERT_FILE, KEY_FILE))),
        )
        request = JobRequest(
            role=role,
            job_name=f"dask-{role}-{cluster.name}",
            username=cluster.username,
            staging_dir=staging,
            log_path=os.path.join(staging, f"{stem}.log"),
            cores=int(cfg.get(f"{role}_cores", 1)),
            memory=int(cfg.get(f"{role}_memory", 0)),
            config=cfg,
        )
        env_name = f"{stem}.env"
        text = render_env_file(job_env, f"{role} of {request.job_name}")
        await self._staging_op(
            cluster.username, {"op": "write", "dir": staging, "files": {env_name: text}}
        )
        script = self.job_script(
            request, os.path.join(staging, env_name), command, cfg.get(f"{role}_setup", "")
        )
        try:
            job_id = await self._submit(request, script)
        except BaseException:
            if worker is None:  # nothing of the cluster's is left behind
                await self._remove_staging(cluster.username, staging)
            raise
        what = "scheduler" if worker is None else f"worker {worker.name}"
        self.log.info(
            "Submitted %s of cluster %s as %s job %s", what, cluster.name, self.queue_name, job_id
        )
        state = {"job_id": job_id, "staging_dir": staging}
        account = await self._account(cluster.username)
        if account is not None:
            state["uid"] = account.pw_uid  # whose files the failure reason may quote
        return state

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

    async def _read_log(self, state: dict, stem: str, lines: int) -> str:
        """The last ``lines`` lines of a job's log; in multi-user mode the directory is
        the user's, so no link is followed and only a file of theirs is read."""
        staging = state.get("staging_dir")
        if not staging or not stem:
            return ""
        return await asyncio.to_thread(
            read_tail_as_root, staging, f"{stem}.log", state.get("uid"), lines=lines
        )

    async def _check(
        self, items: list[tuple[dict, str]], use_cache: bool = False, prefetch=()
    ) -> list[tuple[bool, str]]:
        """``(alive, reason)`` for each ``(state, log stem)``, from one batched query."""
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
            tail = tail_summary(
                await self._read_log(state, stem, self.log_tail_lines), self.log_tail_lines
            )
            if tail:
                log_path = os.path.join(state["staging_dir"], f"{stem}.log")
                reason += f". Last lines of {log_path}: {tail}"
            out.append((False, reason))
        return out

    # --- staging -------------------------------------------------------------------------

    async def _staging_path(self, cluster) -> str:
        template = self.staging_directory
        home = ""
        if "{home}" in template:
            name = self.account_name(cluster.username)  # c.Backend.user_accounts
            try:
                entry = await asyncio.to_thread(pwd.getpwnam, name)
            except KeyError:
                raise BackendError(f"User {name!r} does not exist on this host") from None
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
                await asyncio.to_thread(make_staging_dirs, path, account)
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

    # --- running the queue's commands --------------------------------------------------------

    def _environment(self) -> dict:
        env = clean_environment(self.inherited_environment)
        env.setdefault("PATH", os.defpath)
        return env

    def _wrapped(self, username: str, argv: list[str]) -> list[str]:
        account = self.account_name(username)  # c.Backend.user_accounts
        return [part.replace("{username}", account) for part in self.submit_wrapper] + argv

    async def _run(self, argv: list[str], stdin: str | None = None) -> CommandResult:
        """Run one queue command (at most ``max_concurrent_commands`` at a time)."""
        async with self._limiter():
            self.log.debug("Running %s", shlex.join(argv))
            return await run_command(
                argv, env=self._environment(), timeout=self.command_timeout, stdin=stdin
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
        for chunk in chunks(job_ids, self.status_batch_size):
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
        for chunk in chunks(job_ids, self.status_batch_size):
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


def _stem(worker) -> str:
    """The file name stem of a job's log and environment file: ``scheduler`` for
    ``worker=None``, ``worker-<name>``; "" for a name unfit for a file name."""
    if worker is None:
        return "scheduler"
    return f"worker-{worker.name}" if _SAFE_NAME.match(worker.name) else ""
