"""Job-queue backends: schedulers and workers run as batch jobs of an HPC queue.

This package owns what every queue shares: the per-cluster staging directory (the
cluster's TLS key pair, one environment file per job, the jobs' logs), the job
script, running the queue's commands as subprocesses (never blocking the event
loop, always with a timeout), batching status queries, and turning a job's final
state into a reason a user can read. Its modules:

``backend``
    ``JobQueueBackend``, the backend contract on top of a queue's hooks.
``jobs``
    The records (``JobInfo``, ``JobRequest``, ``CommandResult``), the shared
    ``JobQueueClusterConfig`` and pure helpers (environment files, job id matching).
``commands``
    Running one command under a timeout; coalescing status queries.
``directories``
    What root creates of a staging directory for a job's user (multi-user mode).

Subclasses (``slurm``, ``pbs``) supply the command lines and parse their output:
``submit_args``, ``parse_job_id``, ``status_args``, ``parse_status``,
``cancel_args``, ``cancel_error_is_harmless`` and, optionally,
``lookup_finished`` for jobs the queue no longer lists. When to start, stop or
check anything is the cluster manager's decision, not this package's.
"""

from .backend import JobQueueBackend, queue_command
from .jobs import (
    CERT_FILE,
    KEY_FILE,
    STAGING_MARKER,
    CommandResult,
    JobInfo,
    JobQueueClusterConfig,
    JobRequest,
    match_job_ids,
    parse_memory_mb,
    render_env_file,
)

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "STAGING_MARKER",
    "CommandResult",
    "JobInfo",
    "JobQueueBackend",
    "JobQueueClusterConfig",
    "JobRequest",
    "match_job_ids",
    "parse_memory_mb",
    "queue_command",
    "render_env_file",
]
