"""Unit tests of the PBS backend: command lines, and parsers fed with ``qstat`` output
written from the PBS Professional / OpenPBS reference guide (``qstat -x -F json -f``,
``qstat -f``) and Torque's ``qstat -f``. No PBS server is packaged for Debian, so the
backend's lifecycle runs against stand-in qsub/qstat/qdel scripts."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from jobqueue_helpers import check_registration, job_request
from jupyterhub_dask_gateway.backends.jobqueue import CommandResult
from jupyterhub_dask_gateway.backends.pbs import (
    PBSBackend,
    PBSClusterConfig,
    parse_qstat_json,
    parse_qstat_text,
    parse_qsub,
)
from jupyterhub_dask_gateway.errors import BackendError
from jupyterhub_dask_gateway.models import Cluster, JobStatus, Worker

# --- samples -----------------------------------------------------------------------------

QSTAT_JSON = {
    "timestamp": 1700000000,
    "pbs_version": "22.05.11",
    "pbs_server": "pbs01",
    "Jobs": {
        "1234.pbs01": {
            "Job_Name": "dask-worker-c1",
            "Job_Owner": "alice@login01",
            "resources_used": {
                "cpupercent": 3,
                "cput": "00:00:01",
                "mem": "120332kb",
                "ncpus": 1,
                "vmem": "512340kb",
                "walltime": "00:00:12",
            },
            "job_state": "R",
            "queue": "workq",
            "server": "pbs01",
            "Checkpoint": "u",
            "ctime": "Tue Nov 14 10:13:20 2023",
            "Error_Path": "login01:/srv/staging/c1/worker-a.pbs.log",
            "exec_host": "node01/0",
            "exec_vnode": "(node01:ncpus=1:mem=262144kb)",
            "Hold_Types": "n",
            "Join_Path": "oe",
            "Keep_Files": "n",
            "Mail_Points": "a",
            "mtime": "Tue Nov 14 10:13:21 2023",
            "Output_Path": "login01:/srv/staging/c1/worker-a.pbs.log",
            "Priority": 0,
            "qtime": "Tue Nov 14 10:13:20 2023",
            "Rerunable": "False",
            "Resource_List": {
                "mem": "256mb",
                "ncpus": 1,
                "nodect": 1,
                "place": "pack",
                "select": "1:ncpus=1:mem=256mb",
                "walltime": "01:00:00",
            },
            "stime": "Tue Nov 14 10:13:21 2023",
            "session_id": 48211,
            "jobdir": "/home/alice",
            "substate": 42,
            "Variable_List": {
                "PBS_O_HOME": "/home/alice",
                "PBS_O_LOGNAME": "alice",
                "PBS_O_WORKDIR": "/home/alice",
                "PBS_O_QUEUE": "workq",
                "PBS_O_HOST": "login01",
            },
            "comment": "Job run at Tue Nov 14 at 10:13 on (node01:ncpus=1:mem=262144kb)",
            "etime": "Tue Nov 14 10:13:20 2023",
            "run_count": 1,
            "Submit_arguments": "-N dask-worker-c1 -r n -j oe",
            "project": "_pbs_project_default",
            "Submit_Host": "login01",
        },
        "1235.pbs01": {
            "Job_Name": "dask-worker-c1",
            "job_state": "Q",
            "queue": "workq",
            "comment": "Not Running: Insufficient amount of resource: ncpus (R: 1 A: 0 T: 8)",
            "substate": 10,
        },
        "1236.pbs01": {
            "Job_Name": "dask-worker-c1",
            "job_state": "F",
            "queue": "workq",
            "Exit_status": -29,
            "comment": "Job run at Tue Nov 14 at 10:13 on (node01:ncpus=1) and finished",
            "substate": 93,
        },
        "1237.pbs01": {
            "Job_Name": "dask-worker-c1",
            "job_state": "F",
            "Exit_status": 271,
            "comment": "Job run at Tue Nov 14 at 10:14 on (node01:ncpus=1) and finished",
            "substate": 91,
        },
        "1238.pbs01": {"job_state": "F", "Exit_status": 0, "substate": 92},
        "1239.pbs01": {"job_state": "F", "Exit_status": 1, "substate": 92},
        "1240.pbs01": {"job_state": "E", "substate": 51},
        "1241.pbs01": {"job_state": "H", "comment": "job held, too many failed attempts to run"},
    },
}

# PBS Pro wraps long values at 78 columns and continues them on a tab-indented line
QSTAT_F_PBSPRO = """\
Job Id: 1235.pbs01
    Job_Name = dask-scheduler-c1
    Job_Owner = alice@login01
    job_state = Q
    queue = workq
    server = pbs01
    Checkpoint = u
    ctime = Tue Nov 14 10:13:20 2023
    Error_Path = login01:/srv/staging/c1/scheduler.pbs.log
    Hold_Types = n
    Join_Path = oe
    Resource_List.mem = 256mb
    Resource_List.ncpus = 1
    Resource_List.select = 1:ncpus=1:mem=256mb
    substate = 10
    Variable_List = PBS_O_HOME=/home/alice,PBS_O_LANG=C.UTF-8,
\tPBS_O_LOGNAME=alice,PBS_O_WORKDIR=/home/alice
    comment = Not Running: Insufficient amount of resource: ncpus (R: 1 A: 0 T:
\t 8)
    etime = Tue Nov 14 10:13:20 2023

Job Id: 1236.pbs01
    Job_Name = dask-worker-c1
    job_state = F
    Exit_status = -29
    comment = Job run at Tue Nov 14 at 10:13 on (node01:ncpus=1) and finished

"""

QSTAT_F_TORQUE = """\
Job Id: 77.torque-head.example.org
    Job_Name = dask-worker-c1
    Job_Owner = alice@login01.example.org
    resources_used.cput = 00:00:00
    resources_used.mem = 3264kb
    resources_used.walltime = 00:00:07
    job_state = C
    queue = batch
    server = torque-head.example.org
    exit_status = 271
    submit_args = -N dask-worker-c1 -r n -j oe
Job Id: 78.torque-head.example.org
    Job_Name = dask-worker-c1
    job_state = R
    queue = batch
"""


def request(role="worker", **config):
    return job_request(PBSClusterConfig, role, **config)


# --- command lines -------------------------------------------------------------------------


def test_qsub_command_line_defaults():
    args = PBSBackend().submit_args(request("scheduler", scheduler_memory="512 M"))
    assert args == [
        "-N",
        "dask-scheduler-c1",
        "-r",
        "n",
        "-j",
        "oe",
        "-o",
        "/srv/staging/c1/scheduler.pbs.log",
        "-l",
        "select=1:ncpus=1:mem=512mb",
    ]


def test_qsub_command_line_with_every_setting():
    args = PBSBackend().submit_args(
        request(
            "worker",
            worker_cores=2,
            worker_memory="4 G",
            queue="gpu",
            account="acct7",
            project="proj1",
            walltime="00:30:00",
            worker_resource_list="nodes=1:ppn={cores},mem={memory_mb}mb",
            worker_extra_directives=["-l", "ngpus=1"],
        )
    )
    assert args[8:] == [
        "-l",
        "nodes=1:ppn=2,mem=4096mb",
        "-l",
        "walltime=00:30:00",
        "-q",
        "gpu",
        "-A",
        "acct7",
        "-P",
        "proj1",
        "-l",
        "ngpus=1",
    ]


def test_invalid_resource_list_template():
    with pytest.raises(BackendError, match="Invalid worker_resource_list"):
        PBSBackend().submit_args(request("worker", worker_resource_list="ncpus={cpus}"))


def test_job_script_logs_directly_to_the_staging_directory():
    b = PBSBackend()
    script = b.job_script(request("worker"), "/srv/staging/c1/w.env", ["/opt/py", "-V"], "")
    assert script.splitlines()[:7] == [
        "#!/bin/bash",
        "# worker job written by jupyterhub-dask-gateway (dask-worker-c1)",
        "exec >>/srv/staging/c1/worker.log 2>&1",
        "set -e",
        "cd /srv/staging/c1",
        ". /srv/staging/c1/w.env",
        "exec /opt/py -V",
    ]


def test_status_command_lines():
    b = PBSBackend()
    assert b.status_args(["1.s", "2.s"]) == ["-x", "-F", "json", "-f", "1.s", "2.s"]
    b.status_format = "text"
    assert b.status_args(["1.s"]) == ["-f", "1.s"]
    assert b.cancel_args(["1.s", "2.s"]) == ["1.s", "2.s"]


def test_short_name_loads_the_pbs_backend_and_every_trait_has_help():
    check_registration("pbs", PBSBackend, PBSClusterConfig)


# --- parsers ---------------------------------------------------------------------------------


def test_parse_qsub():
    assert parse_qsub("1234.pbs01\n") == "1234.pbs01"
    assert parse_qsub("77.torque-head.example.org\n") == "77.torque-head.example.org"
    assert parse_qsub("1234\n") == "1234"
    with pytest.raises(BackendError, match="Unexpected qsub output"):
        parse_qsub("qsub: Unknown queue\n")


def test_parse_qstat_json():
    jobs = parse_qstat_json(json.dumps(QSTAT_JSON, indent=4))
    assert jobs["1234.pbs01"].alive and not jobs["1234.pbs01"].pending
    queued = jobs["1235.pbs01"]
    assert queued.alive and queued.pending
    assert queued.reason.startswith("Not Running: Insufficient amount of resource")
    assert not jobs["1236.pbs01"].alive
    assert jobs["1236.pbs01"].reason.startswith("was killed: it reached its walltime; PBS says:")
    assert jobs["1237.pbs01"].reason.startswith("was killed by signal 15 (cancelled")
    assert jobs["1238.pbs01"].reason == "exited"
    assert jobs["1239.pbs01"].reason == "exited with status 1"
    assert (jobs["1240.pbs01"].alive, jobs["1240.pbs01"].reason) == (False, "is exiting")
    held = jobs["1241.pbs01"]
    assert held.alive and held.pending and "too many failed attempts" in held.reason


def test_parse_qstat_json_edge_cases():
    assert parse_qstat_json("") == {}
    assert parse_qstat_json('{"timestamp": 1, "pbs_version": "22.05", "pbs_server": "s"}') == {}
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_qstat_json('{"Jobs": {"1.s": {"Variable_List": {"X": "a\tb"')


def test_parse_qstat_text_pbspro():
    jobs = parse_qstat_text(QSTAT_F_PBSPRO)
    assert set(jobs) == {"1235.pbs01", "1236.pbs01"}
    assert jobs["1235.pbs01"].pending
    # the wrapped comment is joined back together
    assert jobs["1235.pbs01"].reason.endswith("(R: 1 A: 0 T:8)")
    assert "walltime" in jobs["1236.pbs01"].reason


def test_parse_qstat_text_torque():
    jobs = parse_qstat_text(QSTAT_F_TORQUE)
    done = jobs["77.torque-head.example.org"]
    assert (done.alive, done.state) == (False, "C")
    assert done.reason.startswith("was killed by signal 15")
    assert jobs["78.torque-head.example.org"].alive


def test_parse_status_tolerates_unknown_ids_but_not_other_errors():
    b = PBSBackend()
    only_unknown = CommandResult(
        153, json.dumps({"Jobs": {"1.s": {"job_state": "R"}}}), "qstat: Unknown Job Id 2.s\n"
    )
    assert set(b.parse_status(only_unknown, ["1.s", "2.s"])) == {"1.s"}
    all_unknown = CommandResult(153, "", "qstat: Unknown Job Id 2.s\n")
    assert b.parse_status(all_unknown, ["2.s"]) == {}
    down = CommandResult(
        1, "", "Connection refused\nqstat: cannot connect to server pbs01 (errno=111)\n"
    )
    with pytest.raises(BackendError, match="cannot connect to server"):
        b.parse_status(down, ["2.s"])


def test_harmless_qdel_errors():
    b = PBSBackend()
    assert b.cancel_error_is_harmless("qdel: Unknown Job Id 12.pbs01")
    assert b.cancel_error_is_harmless("qdel: Job has finished 12.pbs01")
    assert b.cancel_error_is_harmless(
        "qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE 77.torque"
    )
    assert not b.cancel_error_is_harmless("qdel: Unauthorized Request  12.pbs01")


# --- lifecycle against stand-in commands ------------------------------------------------------

FAKE_QSUB = """#!/bin/sh
d=$(dirname "$0")
n=$(($(cat "$d/next_id" 2>/dev/null || echo 500) + 1)); echo "$n" > "$d/next_id"
printf '%s\\n' "$@" > "$d/qsub.$n.args"
cat > "$d/qsub.$n.script"
if [ -f "$d/qsub.fail" ]; then cat "$d/qsub.fail" >&2; exit 2; fi
echo "$n.pbs01"
"""
FAKE_QSTAT = """#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/qstat.calls"
cat "$d/qstat.out" 2>/dev/null
[ -f "$d/qstat.err" ] && { cat "$d/qstat.err" >&2; exit 153; }
exit 0
"""
FAKE_QDEL = """#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/qdel.calls"
[ -f "$d/qdel.err" ] && { cat "$d/qdel.err" >&2; exit 1; }
exit 0
"""


@pytest.fixture
async def pbs(tmp_path):
    """A PBSBackend wired to stand-in qsub/qstat/qdel scripts in tmp_path/bin."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, text in [("qsub", FAKE_QSUB), ("qstat", FAKE_QSTAT), ("qdel", FAKE_QDEL)]:
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    b = PBSBackend(
        gateway_state_dir=str(tmp_path / "state"),
        submit_command=str(d / "qsub"),
        status_command=str(d / "qstat"),
        cancel_command=str(d / "qdel"),
        status_cache_seconds=0,
    )
    b.bin = d
    yield b
    await b.cleanup()


def cluster_for(backend, **overrides):
    cfg = backend.make_cluster_config(
        {"scheduler_memory": "1 G", "worker_memory": "2 G", **overrides}
    ).to_dict()
    return Cluster(
        name="c1", username="alice", token="t", tls_cert="CERT", tls_key="KEY", config=cfg
    )


async def test_pbs_lifecycle(pbs):
    d = pbs.bin
    cluster = cluster_for(pbs, queue="workq")
    cluster.state = await pbs.start_cluster(cluster, {"DASK_GATEWAY_API_TOKEN": "x"})
    staging = cluster.state["staging_dir"]
    assert cluster.state == {"job_id": "501.pbs01", "staging_dir": staging}
    args = (d / "qsub.501.args").read_text().splitlines()
    assert args[args.index("-q") + 1] == "workq"
    assert "select=1:ncpus=1:mem=1024mb" in args
    script = (d / "qsub.501.script").read_text()
    assert f"exec >>{staging}/scheduler.log 2>&1" in script

    cluster.scheduler_address = "tls://10.0.0.5:8786"
    worker = Worker(name="w1", cluster_name="c1", status=JobStatus.SUBMITTED)
    worker.state = await pbs.start_worker(cluster, worker, {})
    cluster.workers["w1"] = worker
    assert worker.state["job_id"] == "502.pbs01"
    assert "select=1:ncpus=1:mem=2048mb" in (d / "qsub.502.args").read_text().splitlines()

    # the server answers with its full name; ids are matched by number
    (d / "qstat.out").write_text(
        json.dumps(
            {
                "Jobs": {
                    "501.pbs01.example.org": {"job_state": "R"},
                    "502.pbs01.example.org": {"job_state": "F", "Exit_status": -29},
                }
            }
        )
    )
    assert await pbs.check_clusters([cluster]) == [(True, "")]
    [(alive, reason)] = await pbs.check_workers(cluster, [worker])
    assert not alive
    assert reason == "PBS job 502.pbs01 was killed: it reached its walltime (job_state F)"
    # the log the job script appends to is the one log_tail reads
    assert f"exec >>{staging}/worker-w1.log 2>&1" in (d / "qsub.502.script").read_text()
    with open(os.path.join(staging, "worker-w1.log"), "w") as f:
        f.write("distributed.worker - INFO - Start worker\nkilled\n")
    assert await pbs.log_tail(cluster, worker, lines=1) == "killed"
    assert (d / "qstat.calls").read_text().splitlines()[0] == "-x -F json -f 501.pbs01 502.pbs01"

    (d / "qdel.err").write_text("qdel: Job has finished 502.pbs01\n")
    await pbs.stop_worker(cluster, worker)
    worker.status = JobStatus.FAILED
    await pbs.stop_cluster(cluster)
    assert (d / "qdel.calls").read_text().splitlines() == ["502.pbs01", "501.pbs01"]
    assert not os.path.exists(staging)


async def test_pbs_rejected_submission(pbs):
    (pbs.bin / "qsub.fail").write_text("qsub: Unknown queue\n")
    with pytest.raises(BackendError) as info:
        await pbs.start_cluster(cluster_for(pbs, queue="nope"), {})
    assert info.value.message == "PBS rejected the scheduler job: qsub: Unknown queue"


async def test_pbs_unknown_jobs_are_gone(pbs):
    (pbs.bin / "qstat.err").write_text("qstat: Unknown Job Id 9.pbs01\n")
    cluster = cluster_for(pbs)
    cluster.state = {"job_id": "9.pbs01"}
    assert await pbs.check_clusters([cluster]) == [
        (False, "PBS job 9.pbs01 no longer known to the queue (job_state UNKNOWN)")
    ]


def test_text_samples_are_what_the_docs_show():
    # guard against an editor stripping the tab continuation lines of the samples
    assert "\n\tPBS_O_LOGNAME" in QSTAT_F_PBSPRO
    assert textwrap.dedent(QSTAT_F_TORQUE) == QSTAT_F_TORQUE
