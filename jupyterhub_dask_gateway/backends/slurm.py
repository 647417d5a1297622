"""The Slurm backend: each scheduler and each worker is one Slurm batch job.

Owns the Slurm command lines (``sbatch --parsable``, ``squeue``, ``scancel``,
``sacct``) and the parsing of their output. Staging, job scripts, batching and
the backend contract come from ``jobqueue``.
"""

from __future__ import annotations

import re
import shutil

from traitlets import Unicode, default

from ..errors import BackendError
from .jobqueue import (
    CommandResult,
    JobInfo,
    JobQueueBackend,
    JobQueueClusterConfig,
    JobRequest,
    parse_memory_mb,
    queue_command,
)

__all__ = ["SlurmBackend", "SlurmClusterConfig", "parse_sbatch", "parse_squeue", "parse_sacct"]

# Job states in which a job still holds, or is waiting for, its allocation. Anything
# else (COMPLETED, FAILED, TIMEOUT, CANCELLED, COMPLETING, NODE_FAIL, ...) means gone.
ALIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESV_DEL_HOLD",
    }
)

_DEAD_WORDS = {
    "BOOT_FAIL": "could not start: its node failed to boot",
    "CANCELLED": "was cancelled",
    "COMPLETED": "exited",
    "COMPLETING": "is exiting",
    "DEADLINE": "reached its deadline",
    "FAILED": "failed",
    "NODE_FAIL": "was killed: its node failed",
    "OUT_OF_MEMORY": "was killed: it ran out of memory",
    "PREEMPTED": "was preempted",
    "REVOKED": "was revoked",
    "SPECIAL_EXIT": "failed (special exit)",
    "TIMEOUT": "was killed: it reached its time limit (walltime)",
}

# scancel complaints that only mean "nothing left to cancel"
_HARMLESS_CANCEL = re.compile(
    r"Invalid job id specified|already completing or completed|Job has already finished",
    re.IGNORECASE,
)
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
# One node name as squeue prints it for a one-node job (no ranges, no lists).
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SlurmClusterConfig(JobQueueClusterConfig):
    """Per-cluster settings of the Slurm backend."""

    partition = Unicode(
        "",
        help="Slurm partition of the cluster's jobs (sbatch --partition); empty = the default.",
    ).tag(config=True)
    account = Unicode(
        "",
        help="Slurm account the jobs are charged to (sbatch --account); empty = the default.",
    ).tag(config=True)
    qos = Unicode(
        "",
        help="Slurm quality of service of the jobs (sbatch --qos); empty = the default.",
    ).tag(config=True)


class SlurmBackend(JobQueueBackend):
    """Run each Dask scheduler and worker as a Slurm batch job.

    Jobs get ``--cpus-per-task`` and ``--mem`` (MiB) from the cluster's
    ``scheduler_cores``/``scheduler_memory`` and ``worker_cores``/``worker_memory``,
    plus the partition, account, QOS and time limit of ``SlurmClusterConfig``.
    Liveness comes from one ``squeue`` call for all jobs; jobs that ``squeue`` no
    longer lists are looked up with ``sacct`` when accounting is configured.
    """

    _abstract = False
    queue_name = "Slurm"

    @default("cluster_config_class")
    def _default_cluster_config_class(self):
        return SlurmClusterConfig

    submit_command = queue_command("sbatch")
    status_command = queue_command("squeue")
    cancel_command = queue_command("scancel")
    control_command = queue_command(
        "scontrol", ", which says at which address a job's node is reached"
    )
    accounting_command = Unicode(
        "sacct",
        help="""The sacct executable, used for the final state of jobs squeue no longer
        lists (after MinJobAge). Empty disables it; without Slurm accounting those jobs
        are simply reported as gone.""",
    ).tag(config=True)

    def submit_args(self, request: JobRequest) -> list[str]:
        cfg = request.config
        args = [
            "--parsable",
            f"--job-name={request.job_name}",
            f"--chdir={request.staging_dir}",
            f"--output={request.log_path}",
            "--ntasks=1",
            f"--cpus-per-task={request.cores}",
            f"--mem={parse_memory_mb(request.memory)}",
            # a requeued scheduler would come back at another address: fail instead
            "--no-requeue",
        ]
        for option, key in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
            if cfg.get(key):
                args.append(f"--{option}={cfg[key]}")
        if cfg.get("walltime"):
            args.append(f"--time={cfg['walltime']}")
        args.extend(cfg.get(f"{request.role}_extra_directives") or [])
        return args

    def parse_job_id(self, stdout: str) -> str:
        return parse_sbatch(stdout)

    def status_args(self, job_ids: list[str]) -> list[str]:
        # --states=all: with -j alone, finished jobs are omitted even while squeue knows them
        return ["--noheader", "--states=all", "--jobs=" + ",".join(job_ids), "--format=%i %T %r"]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobInfo]:
        if result.returncode != 0:
            # squeue -j with a single purged id fails with this; it only means "gone"
            if "Invalid job id" in result.stderr:
                return {}
            raise BackendError(f"squeue failed: {result.message()}")
        return parse_squeue(result.stdout)

    async def job_host(self, job_id: str) -> str:
        # The job's node, then that node's address as slurm.conf gives it (NodeAddr).
        result = await self._run(
            [self.status_command, "--noheader", f"--jobs={job_id}", "--format=%N"]
        )
        node = result.stdout.strip() if result.returncode == 0 else ""
        if not node or not _NODE_NAME.match(node):
            return ""
        shown = await self._run([self.control_command, "--oneliner", "show", "node", node])
        match = re.search(r"\bNodeAddr=(\S+)", shown.stdout) if shown.returncode == 0 else None
        return match.group(1) if match else node

    def cancel_args(self, job_ids: list[str]) -> list[str]:
        return list(job_ids)

    def cancel_error_is_harmless(self, line: str) -> bool:
        return bool(_HARMLESS_CANCEL.search(line))

    async def lookup_finished(self, job_ids: list[str]) -> dict[str, JobInfo]:
        sacct = self.accounting_command
        if not sacct or shutil.which(sacct, path=self._environment().get("PATH")) is None:
            return {}
        result = await self._run(
            [
                sacct,
                "--noheader",
                "--parsable2",
                "--allocations",
                "--jobs=" + ",".join(job_ids),
                "--format=JobID,State,ExitCode,Reason",
            ]
        )
        if result.returncode != 0:
            # e.g. "Slurm accounting storage is disabled": nothing more to learn
            self.log.debug("sacct failed: %s", result.message())
            return {}
        return parse_sacct(result.stdout)

    def describe_dead(self, info: JobInfo) -> str:
        words = _DEAD_WORDS.get(info.state.split()[0].upper() if info.state else "", "ended")
        text = f"Slurm job {info.job_id} {words} ({info.state}"
        return text + (f", {info.reason})" if info.reason else ")")


# --- parsers (pure; unit-tested with real output) ------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable``: ``"42"`` or ``"42;cluster"``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0] if lines else ""
    if not _JOB_ID.match(job_id):
        raise BackendError(f"Unexpected sbatch output {stdout.strip()!r}; expected a job id")
    return job_id


def _reason(text: str) -> str:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return "" if text in ("", "None", "(null)") else text


def parse_squeue(stdout: str) -> dict[str, JobInfo]:
    """Lines of ``squeue -h -o "%i %T %r"``: job id, state, reason (may contain spaces)."""
    jobs = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 2:
            continue
        job_id, state = parts[0], parts[1].upper()
        reason = _reason(parts[2]) if len(parts) > 2 else ""
        jobs[job_id] = JobInfo(
            job_id, state in ALIVE_STATES, state, reason, pending=state == "PENDING"
        )
    return jobs


def parse_sacct(stdout: str) -> dict[str, JobInfo]:
    """Lines of ``sacct -n -P -X -o JobID,State,ExitCode,Reason``.

    States may carry a suffix (``CANCELLED by 0``); the exit code is
    ``code:signal``. A job can appear once per requeue: the last line wins.
    """
    jobs = {}
    for line in stdout.splitlines():
        fields = line.split("|")
        if len(fields) < 2 or not fields[0].strip():
            continue
        job_id = fields[0].strip()
        state = fields[1].strip()
        exit_code = fields[2].strip() if len(fields) > 2 else ""
        reason = _reason(fields[3]) if len(fields) > 3 else ""
        details = [d for d in (reason, f"exit code {exit_code}" if exit_code else "") if d]
        word = state.split()[0].upper() if state else ""
        jobs[job_id] = JobInfo(
            job_id,
            word in ALIVE_STATES,
            state,
            ", ".join(details),
            pending=word == "PENDING",
        )
    return jobs
