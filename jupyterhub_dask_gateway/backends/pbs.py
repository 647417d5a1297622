"""The PBS backend (PBS Professional / OpenPBS; Torque with ``status_format="text"``).

Owns the PBS command lines (``qsub``, ``qstat``, ``qdel``) and the parsing of
``qstat -x -F json -f`` and of ``qstat -f`` text. Staging, job scripts, batching
and the backend contract come from ``jobqueue``. No PBS server is packaged for
Debian, so this backend is exercised by unit tests only.
"""

from __future__ import annotations

import json
import re
import shlex

from traitlets import Enum, Unicode, default

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

__all__ = ["PBSBackend", "PBSClusterConfig", "parse_qsub", "parse_qstat_json", "parse_qstat_text"]

# job_state letters (PBS Pro reference guide, "Job States"; C is Torque's "completed").
# Q queued, H held, W waiting, T transiting, M moved, R running, S/U suspended,
# B array begun are alive; E exiting, F finished, X finished subjob, C completed are not.
ALIVE_STATES = frozenset("QHWTMRSUB")
PENDING_STATES = frozenset("QHWT")

# Exit_status values PBS gives jobs it ended itself (negative JOB_EXEC_* codes)
_EXEC_CODES = {
    -29: "was killed: it reached its walltime",
    -27: "was killed: it used more memory than requested",
    -25: "was killed: it used more CPUs than requested",
    -24: "was killed: it used more CPUs than requested",
    -26: "was killed: it used more virtual memory than requested",
    -11: "could not be restarted",
    -3: "could not start (the execution host refused it)",
    -1: "could not start (the execution host refused it)",
}

_HARMLESS_CANCEL = re.compile(
    r"Unknown Job Id|Job has finished|Request invalid for state of job|job has already finished",
    re.IGNORECASE,
)
_UNKNOWN_JOB = re.compile(r"Unknown Job Id", re.IGNORECASE)


class PBSClusterConfig(JobQueueClusterConfig):
    """Per-cluster settings of the PBS backend."""

    queue = Unicode(
        "", help="PBS queue of the cluster's jobs (qsub -q); empty = the server's default."
    ).tag(config=True)
    account = Unicode("", help="Account string of the jobs (qsub -A); empty = none.").tag(
        config=True
    )
    project = Unicode(
        "", help="PBS Pro project of the jobs (qsub -P); empty = the default project."
    ).tag(config=True)
    scheduler_resource_list = Unicode(
        "select=1:ncpus={cores}:mem={memory_mb}mb",
        help="""Resources of the scheduler's job (qsub -l). Fields: ``{cores}``,
        ``{memory}`` (bytes) and ``{memory_mb}`` (MiB, rounded up) from
        ``scheduler_cores``/``scheduler_memory``. Torque sites use e.g.
        ``"nodes=1:ppn={cores},mem={memory_mb}mb"``.""",
    ).tag(config=True)
    worker_resource_list = Unicode(
        "select=1:ncpus={cores}:mem={memory_mb}mb",
        help="""Resources of each worker's job (qsub -l), with the fields of
        ``scheduler_resource_list`` filled from ``worker_cores``/``worker_memory``.""",
    ).tag(config=True)


class PBSBackend(JobQueueBackend):
    """Run each Dask scheduler and worker as a PBS batch job.

    Liveness comes from one ``qstat`` call for all jobs. With PBS Pro / OpenPBS
    (``status_format="json"``) it is ``qstat -x -F json -f``, which also lists
    finished jobs while the server keeps job history; ``"text"`` parses
    ``qstat -f`` for Torque and older servers.
    """

    _abstract = False
    queue_name = "PBS"

    @default("cluster_config_class")
    def _default_cluster_config_class(self):
        return PBSClusterConfig

    submit_command = queue_command("qsub")
    status_command = queue_command("qstat")
    cancel_command = queue_command("qdel")
    status_format = Enum(
        ["json", "text"],
        "json",
        help="""How to read job states: "json" runs ``qstat -x -F json -f`` (PBS Pro and
        OpenPBS 18 or later); "text" runs ``qstat -f`` and parses its attribute lines
        (Torque, older PBS).""",
    ).tag(config=True)

    def submit_args(self, request: JobRequest) -> list[str]:
        cfg = request.config
        resources = cfg.get(f"{request.role}_resource_list") or ""
        try:
            resources = resources.format(
                cores=request.cores,
                memory=request.memory,
                memory_mb=parse_memory_mb(request.memory),
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise BackendError(
                f"Invalid {request.role}_resource_list {resources!r}: {exc}"
            ) from None
        args = [
            "-N",
            request.job_name[:236],
            "-r",
            "n",  # not rerunnable: a rerun scheduler would come back at another address
            "-j",
            "oe",
            # PBS copies this file back when the job ends; the script logs to log_path itself
            "-o",
            request.log_path[: -len(".log")] + ".pbs.log",
        ]
        if resources:
            args += ["-l", resources]
        if cfg.get("walltime"):
            args += ["-l", f"walltime={cfg['walltime']}"]
        for option, key in (("-q", "queue"), ("-A", "account"), ("-P", "project")):
            if cfg.get(key):
                args += [option, cfg[key]]
        args.extend(cfg.get(f"{request.role}_extra_directives") or [])
        return args

    def script_preamble(self, request: JobRequest) -> list[str]:
        # PBS spools job output on the execution host until the end; log directly instead
        return [f"exec >>{shlex.quote(request.log_path)} 2>&1"]

    def parse_job_id(self, stdout: str) -> str:
        return parse_qsub(stdout)

    async def job_host(self, job_id: str) -> str:
        result = await self._run([self.status_command, "-f", job_id])
        return exec_host(result.stdout) if result.returncode == 0 else ""

    def status_args(self, job_ids: list[str]) -> list[str]:
        if self.status_format == "json":
            return ["-x", "-F", "json", "-f", *job_ids]
        return ["-f", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobInfo]:
        # qstat exits non-zero when any id is unknown, yet still reports the others
        other_errors = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and not _UNKNOWN_JOB.search(line)
        ]
        try:
            if self.status_format == "json":
                jobs = parse_qstat_json(result.stdout)
            else:
                jobs = parse_qstat_text(result.stdout)
        except ValueError as exc:
            raise BackendError(f"Unreadable qstat output: {exc}; {result.message()}") from None
        if result.returncode != 0 and other_errors and not jobs:
            raise BackendError(f"qstat failed: {result.message()}")
        return jobs

    def cancel_args(self, job_ids: list[str]) -> list[str]:
        return list(job_ids)

    def cancel_error_is_harmless(self, line: str) -> bool:
        return bool(_HARMLESS_CANCEL.search(line))

    def describe_dead(self, info: JobInfo) -> str:
        return f"PBS job {info.job_id} {info.reason or 'ended'} (job_state {info.state})"


# --- parsers (pure; unit-tested with output samples) -------------------------------------


def parse_qsub(stdout: str) -> str:
    """qsub prints the new job's id, e.g. ``1234.pbs-server``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1] if lines else ""
    if not re.match(r"^\d+(\[\d*\])?(\.[\w.-]+)?$", job_id):
        raise BackendError(f"Unexpected qsub output {stdout.strip()!r}; expected a job id")
    return job_id


def _exit_status(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def job_info(job_id: str, attrs: dict) -> JobInfo:
    """A JobInfo from one job's attributes (``job_state``, ``Exit_status``, ``comment``)."""
    lowered = {k.lower(): v for k, v in attrs.items()}
    state = str(lowered.get("job_state", "")).strip().upper()[:1]
    comment = str(lowered.get("comment", "")).strip()
    if state in ALIVE_STATES:
        return JobInfo(job_id, True, state, comment, pending=state in PENDING_STATES)
    code = _exit_status(lowered.get("exit_status"))
    if code is None:
        words = "is exiting" if state == "E" else "ended"
    elif code == 0:
        words = "exited"
    elif code in _EXEC_CODES:
        words = _EXEC_CODES[code]
    elif code > 256:
        # 256 + signal: qdel (SIGTERM, 271) or a kill by the system
        words = f"was killed by signal {code - 256}"
        if code - 256 == 15:
            words += " (cancelled, or over a limit)"
    elif code < 0:
        words = f"could not be run by PBS (Exit_status {code})"
    else:
        words = f"exited with status {code}"
    if comment:
        words += f"; PBS says: {comment}"
    return JobInfo(job_id, False, state or "?", words)


def parse_qstat_json(stdout: str) -> dict[str, JobInfo]:
    """``qstat -x -F json -f``: ``{"Jobs": {"<id>": {"job_state": "R", ...}}}``.

    With only unknown ids the output may be empty or lack ``Jobs``.
    """
    if not stdout.strip():
        return {}
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc})") from None
    jobs = data.get("Jobs") or {}
    if not isinstance(jobs, dict):
        raise ValueError("'Jobs' is not an object")
    return {job_id: job_info(job_id, attrs) for job_id, attrs in jobs.items()}


def parse_qstat_text(stdout: str) -> dict[str, JobInfo]:
    """``qstat -f``: a ``Job Id: <id>`` line, then indented ``name = value`` lines;
    long values continue on lines starting with a tab."""
    return {job_id: job_info(job_id, attrs) for job_id, attrs in qstat_records(stdout).items()}


def exec_host(stdout: str) -> str:
    """The first node of ``exec_host = node/0+node2/1`` in one job's ``qstat -f``."""
    for attrs in qstat_records(stdout).values():
        first = attrs.get("exec_host", "").split("+")[0].split("/")[0].strip()
        if first:
            return first
    return ""


def qstat_records(stdout: str) -> dict[str, dict]:
    """``{job id: {attribute: value}}`` from ``qstat -f`` text."""
    records: dict[str, dict] = {}
    current: dict | None = None
    last_key = None
    for raw in stdout.splitlines():
        if raw.startswith("Job Id:"):
            current = records.setdefault(raw.split(":", 1)[1].strip(), {})
            last_key = None
        elif current is None or not raw.strip():
            continue
        elif raw.startswith("\t") and last_key is not None:
            current[last_key] += raw.strip()
        elif " = " in raw:
            key, value = raw.strip().split(" = ", 1)
            current[key] = value
            last_key = key
    return records
