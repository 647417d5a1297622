"""What a job is, to every job-queue backend: the records passed between the base and a
queue's subclass, the per-cluster settings all queues share, and the pure helpers that
write a job's environment file and match the queue's job ids to ours.

No I/O here: running commands is ``commands``, the backend's contract is ``backend``.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass

from traitlets import List, Unicode

from ...errors import BackendError
from ..base import ClusterConfig

# Written into every staging directory; only directories holding it are ever deleted,
# so a mistaken staging_directory template cannot make the gateway remove a home.
STAGING_MARKER = ".jupyterhub-dask-gateway-staging"
CERT_FILE = "dask.crt"
KEY_FILE = "dask.pem"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    """How one queue command ended: exit status and what it printed."""

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
