"""Unit tests of the Slurm backend and the job-queue base: command lines, parsers, job
scripts, staging, batching. Queue commands are small stand-in scripts (the subprocess path
is the real one); the real Slurm is exercised in test_backend_slurm.py."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap

import pytest

from jobqueue_helpers import check_registration, job_request
from jupyterhub_dask_gateway.backends.jobqueue import (
    STAGING_MARKER,
    CommandResult,
    JobInfo,
    JobQueueBackend,
    match_job_ids,
    parse_memory_mb,
    render_env_file,
)
from jupyterhub_dask_gateway.backends.jobqueue.directories import make_staging_dirs
from jupyterhub_dask_gateway.backends.slurm import (
    SlurmBackend,
    SlurmClusterConfig,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
)
from jupyterhub_dask_gateway.errors import BackendError, Conflict
from jupyterhub_dask_gateway.models import Cluster, JobStatus, Worker

# --- stand-in queue commands ---------------------------------------------------------------

FAKE_SBATCH = """#!/bin/sh
# records its arguments, stdin and environment; prints a job id or fails on demand
d=$(dirname "$0")
n=$(($(cat "$d/next_id" 2>/dev/null || echo 100) + 1)); echo "$n" > "$d/next_id"
printf '%s\\n' "$@" > "$d/sbatch.$n.args"
cat > "$d/sbatch.$n.script"
env > "$d/sbatch.$n.env"
if [ -f "$d/sbatch.fail" ]; then cat "$d/sbatch.fail" >&2; exit 1; fi
echo "$n"
"""

FAKE_SQUEUE = """#!/bin/sh
# appends its arguments to squeue.calls; prints squeue.out; exit code from squeue.rc
d=$(dirname "$0")
echo "$*" >> "$d/squeue.calls"
[ -f "$d/squeue.delay" ] && sleep "$(cat "$d/squeue.delay")"
cat "$d/squeue.out" 2>/dev/null
[ -f "$d/squeue.err" ] && cat "$d/squeue.err" >&2
exit "$(cat "$d/squeue.rc" 2>/dev/null || echo 0)"
"""

FAKE_SCANCEL = """#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/scancel.calls"
[ -f "$d/scancel.err" ] && { cat "$d/scancel.err" >&2; exit 1; }
exit 0
"""

FAKE_SACCT = """#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/sacct.calls"
cat "$d/sacct.out" 2>/dev/null
exit "$(cat "$d/sacct.rc" 2>/dev/null || echo 0)"
"""


def write_exe(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def fake_slurm(tmp_path):
    """A directory of stand-in sbatch/squeue/scancel/sacct scripts that record their calls."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, text in [
        ("sbatch", FAKE_SBATCH),
        ("squeue", FAKE_SQUEUE),
        ("scancel", FAKE_SCANCEL),
        ("sacct", FAKE_SACCT),
    ]:
        write_exe(d / name, text)
    return d


@pytest.fixture
async def backend(fake_slurm, tmp_path):
    """A SlurmBackend wired to the stand-in commands, staging under tmp_path/state."""
    b = SlurmBackend(
        gateway_state_dir=str(tmp_path / "state"),
        submit_command=str(fake_slurm / "sbatch"),
        status_command=str(fake_slurm / "squeue"),
        cancel_command=str(fake_slurm / "scancel"),
        accounting_command=str(fake_slurm / "sacct"),
    )
    yield b
    await b.cleanup()


def make_cluster(backend, name="c1", username="alice", **overrides):
    cfg = backend.make_cluster_config(
        {"scheduler_memory": "1 G", "worker_memory": "1.5 G", **overrides}
    ).to_dict()
    return Cluster(
        name=name,
        username=username,
        token="tok",
        tls_cert="-----CERT-----\n",
        tls_key="-----KEY-----\n",
        config=cfg,
    )


def request(role="worker", **config):
    return job_request(SlurmClusterConfig, role, **config)


# --- command lines ---------------------------------------------------------------------------


def test_sbatch_command_line_defaults():
    args = SlurmBackend().submit_args(request("scheduler", scheduler_memory="512 M"))
    assert args == [
        "--parsable",
        "--job-name=dask-scheduler-c1",
        "--chdir=/srv/staging/c1",
        "--output=/srv/staging/c1/scheduler.log",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=512",
        "--no-requeue",
    ]


def test_sbatch_command_line_with_every_setting():
    args = SlurmBackend().submit_args(
        request(
            "worker",
            worker_cores=4,
            worker_memory="3 G",
            partition="gpu",
            account="proj42",
            qos="short",
            walltime="02:00:00",
            worker_extra_directives=["--gres=gpu:1", "--mem=9000"],
            scheduler_extra_directives=["--never-for-workers"],
        )
    )
    assert "--cpus-per-task=4" in args
    assert "--mem=3072" in args
    assert args[-6:] == [
        "--partition=gpu",
        "--account=proj42",
        "--qos=short",
        "--time=02:00:00",
        "--gres=gpu:1",
        "--mem=9000",  # extra directives come last, so they win
    ]
    assert "--never-for-workers" not in args


def test_memory_is_rounded_up_to_whole_mib():
    assert parse_memory_mb(1) == 1
    assert parse_memory_mb(2**20) == 1
    assert parse_memory_mb(2**20 + 1) == 2
    assert parse_memory_mb(int(1.5 * 2**30)) == 1536


def test_status_and_cancel_command_lines():
    b = SlurmBackend()
    assert b.status_args(["12", "13"]) == [
        "--noheader",
        "--states=all",
        "--jobs=12,13",
        "--format=%i %T %r",
    ]
    assert b.cancel_args(["12", "13"]) == ["12", "13"]


def test_short_name_loads_the_slurm_backend_and_every_trait_has_help():
    check_registration("slurm", SlurmBackend, SlurmClusterConfig)


# --- parsers (outputs copied from Slurm 22.05 on Debian 12) --------------------------------


def test_parse_sbatch():
    assert parse_sbatch("57\n") == "57"
    assert parse_sbatch("57;cluster2\n") == "57"
    assert parse_sbatch("sbatch: warning: something odd\n58\n") == "58"
    for bad in ["", "Submitted batch job 12\n", "error\n"]:
        with pytest.raises(BackendError, match="Unexpected sbatch output"):
            parse_sbatch(bad)


SQUEUE_OUT = """\
3 PENDING Priority
4 PENDING None
5 RUNNING None
6 COMPLETED None
7 FAILED NonZeroExitCode
8 TIMEOUT TimeLimit
9 CANCELLED None
10 COMPLETING None
11 PENDING ReqNodeNotAvail, UnavailableNodes:node[01-02]
12 OUT_OF_MEMORY OutOfMemory
"""


def test_parse_squeue():
    jobs = parse_squeue(SQUEUE_OUT)
    assert jobs["3"] == JobInfo("3", True, "PENDING", "Priority", pending=True)
    assert jobs["4"] == JobInfo("4", True, "PENDING", "", pending=True)
    assert jobs["5"] == JobInfo("5", True, "RUNNING", "")
    assert [j for j, info in jobs.items() if not info.alive] == ["6", "7", "8", "9", "10", "12"]
    assert jobs["7"].reason == "NonZeroExitCode"
    assert jobs["11"].reason == "ReqNodeNotAvail, UnavailableNodes:node[01-02]"
    assert parse_squeue("") == {}


def test_parse_sacct():
    # sacct -n -P -X -o JobID,State,ExitCode,Reason (format checked against Slurm 22.05)
    out = "12|CANCELLED by 0|0:15|None\n13|TIMEOUT|0:0|None\n14|FAILED|1:0|NonZeroExitCode\n"
    jobs = parse_sacct(out)
    assert jobs["12"] == JobInfo("12", False, "CANCELLED by 0", "exit code 0:15")
    assert jobs["13"].state == "TIMEOUT" and not jobs["13"].alive
    assert jobs["14"].reason == "NonZeroExitCode, exit code 1:0"
    assert parse_sacct("15|RUNNING|0:0|None\n")["15"].alive


def test_describe_dead_jobs_in_words_users_understand():
    b = SlurmBackend()
    timeout = parse_squeue("8 TIMEOUT TimeLimit\n")["8"]
    assert b.describe_dead(timeout) == (
        "Slurm job 8 was killed: it reached its time limit (walltime) (TIMEOUT, TimeLimit)"
    )
    assert "was cancelled" in b.describe_dead(parse_sacct("12|CANCELLED by 0|0:15|None")["12"])
    assert "ran out of memory" in b.describe_dead(parse_squeue("12 OUT_OF_MEMORY x\n")["12"])


def test_parse_status_treats_a_purged_id_as_gone_and_other_errors_as_errors():
    b = SlurmBackend()
    purged = CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified\n")
    assert b.parse_status(purged, ["99"]) == {}
    down = CommandResult(
        1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    )
    with pytest.raises(BackendError, match="Unable to contact slurm controller"):
        b.parse_status(down, ["99"])


def test_harmless_cancel_errors():
    b = SlurmBackend()
    assert b.cancel_error_is_harmless(
        "scancel: error: Kill job error on job id 12: Job/step already completing or completed"
    )
    assert b.cancel_error_is_harmless(
        "scancel: error: Kill job error on job id 99: Invalid job id specified"
    )
    assert not b.cancel_error_is_harmless(
        "scancel: error: Kill job error on job id 12: Access/permission denied"
    )


def test_match_job_ids_by_number_when_the_server_suffix_differs():
    info = JobInfo("12.pbs01.example.org", True, "R")
    matched = match_job_ids(["12.pbs01"], {"12.pbs01.example.org": info})
    assert matched == {"12.pbs01": JobInfo("12.pbs01", True, "R")}
    assert match_job_ids(["13"], {"12": info}) == {}


# --- job scripts and environment files ------------------------------------------------------


def test_env_file_round_trips_through_the_shell(tmp_path):
    env = {
        "PLAIN": "value",
        "SPACES": "a b  c",
        "QUOTES": 'it\'s "quoted"',
        "DOLLAR": "$HOME `id` $(id)",
        "NEWLINE": "line1\nline2",
        "EMPTY": "",
    }
    path = tmp_path / "x.env"
    path.write_text(render_env_file(env, "test"))
    code = "import json, os; print(json.dumps({k: os.environ[k] for k in os.environ['K'].split()}))"
    out = subprocess.run(
        ["bash", "-c", f'. {path} && exec {sys.executable} -c "$0"', code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.defpath, "K": " ".join(env)},
    ).stdout
    assert json.loads(out) == env


def test_env_file_rejects_invalid_names():
    with pytest.raises(BackendError, match="Invalid environment variable name"):
        render_env_file({"A;rm -rf /": "x"}, "test")


def test_job_script_layout():
    b = SlurmBackend()
    req = request("scheduler")
    script = b.job_script(
        req, "/srv/staging/c1/scheduler.env", ["/opt/py", "-m", "x", "a b"], "module load py\n"
    )
    assert script == textwrap.dedent("""\
        #!/bin/bash
        # scheduler job written by jupyterhub-dask-gateway (dask-scheduler-c1)
        set -e
        cd /srv/staging/c1
        . /srv/staging/c1/scheduler.env
        # setup lines from the cluster configuration
        module load py
        exec /opt/py -m x 'a b'
        """)


# --- the contract against stand-in commands -----------------------------------------------


async def test_start_cluster_stages_files_and_submits(backend, fake_slurm, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-gateway-secret")
    cluster = make_cluster(backend, scheduler_setup="echo hello")
    state = await backend.start_cluster(cluster, {"DASK_GATEWAY_API_TOKEN": "s3cret"})
    staging = os.path.join(backend.gateway_state_dir, "staging", "c1")
    assert state == {"job_id": "101", "staging_dir": staging}

    assert stat.S_IMODE(os.stat(staging).st_mode) == 0o700
    for name in ["dask.crt", "dask.pem", "scheduler.env", STAGING_MARKER]:
        assert stat.S_IMODE(os.stat(os.path.join(staging, name)).st_mode) == 0o600, name
    with open(os.path.join(staging, "dask.pem")) as f:
        assert f.read() == "-----KEY-----\n"
    with open(os.path.join(staging, "scheduler.env")) as f:
        env_text = f.read()
    assert "export DASK_GATEWAY_API_TOKEN=s3cret" in env_text
    assert f"DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY={staging}/dask.pem" in env_text

    args = (fake_slurm / "sbatch.101.args").read_text().splitlines()
    assert "--job-name=dask-scheduler-c1" in args and "--mem=1024" in args
    script = (fake_slurm / "sbatch.101.script").read_text()
    assert f"cd {staging}\n" in script and "echo hello\n" in script
    assert "s3cret" not in script  # secrets live in the 0600 env file only
    assert "distributed.cli.dask_scheduler" in script
    # the gateway's own environment does not leak into the queue command (or the job)
    assert "the-gateway-secret" not in (fake_slurm / "sbatch.101.env").read_text()


async def test_rejected_submission_raises_with_the_queue_message(backend, fake_slurm):
    (fake_slurm / "sbatch.fail").write_text(
        "sbatch: error: invalid partition specified: nope\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    )
    cluster = make_cluster(backend)
    with pytest.raises(BackendError) as info:
        await backend.start_cluster(cluster, {})
    assert info.value.message == (
        "Slurm rejected the scheduler job: sbatch: error: invalid partition specified: nope; "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    # nothing is left behind
    assert not os.path.exists(os.path.join(backend.gateway_state_dir, "staging", "c1"))


async def test_missing_submit_command_is_a_backend_error(tmp_path):
    b = SlurmBackend(gateway_state_dir=str(tmp_path), submit_command=str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="Cannot run"):
        await b.start_cluster(make_cluster(b), {})


async def test_worker_lifecycle_and_stop_cluster_cleans_up(backend, fake_slurm):
    cluster = make_cluster(backend)
    cluster.state = await backend.start_cluster(cluster, {})
    cluster.scheduler_address = "tls://127.0.0.1:8786"
    w1, w2 = Worker(name="aaa", cluster_name="c1"), Worker(name="bbb", cluster_name="c1")
    for w in (w1, w2):
        w.state = await backend.start_worker(cluster, w, {"DASK_GATEWAY_CLUSTER_NAME": "c1"})
        w.status = JobStatus.SUBMITTED
        cluster.workers[w.name] = w
    assert [w1.state["job_id"], w2.state["job_id"]] == ["102", "103"]
    args = (fake_slurm / "sbatch.102.args").read_text().splitlines()
    assert "--mem=1536" in args and "--job-name=dask-worker-c1" in args
    assert f"--output={cluster.state['staging_dir']}/worker-aaa.log" in args
    script = (fake_slurm / "sbatch.102.script").read_text()
    assert "tls://127.0.0.1:8786 --name aaa" in script
    env_file = os.path.join(cluster.state["staging_dir"], "worker-aaa.env")
    assert "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT" in open(env_file).read()

    await backend.stop_worker(cluster, w1)
    w1.status = JobStatus.STOPPED
    assert not os.path.exists(env_file)  # it held the cluster token
    await backend.stop_cluster(cluster)
    calls = (fake_slurm / "scancel.calls").read_text().splitlines()
    assert calls == ["102", "101 103"]  # the remaining worker goes with the scheduler
    assert not os.path.exists(cluster.state["staging_dir"])
    await backend.stop_cluster(cluster)  # idempotent


async def test_cancel_errors(backend, fake_slurm):
    cluster = make_cluster(backend)
    cluster.state = {"job_id": "12", "staging_dir": ""}
    (fake_slurm / "scancel.err").write_text(
        "scancel: error: Kill job error on job id 12: Job/step already completing or completed\n"
    )
    await backend.stop_cluster(cluster)  # already gone: fine
    (fake_slurm / "scancel.err").write_text(
        "scancel: error: Kill job error on job id 12: Access/permission denied\n"
    )
    backend.cancel_attempts = 2
    with pytest.raises(BackendError, match="Access/permission denied"):
        await backend.stop_cluster(cluster)
    assert (fake_slurm / "scancel.calls").read_text().splitlines() == ["12"] * 3  # 1 + 2 tries


async def test_submit_wrapper_runs_commands_as_the_user(backend, fake_slurm):
    me = pwd.getpwuid(os.getuid()).pw_name  # as root, staging is chowned to the user
    backend.submit_wrapper = ["env", "AS_USER={username}"]
    cluster = make_cluster(backend, username=me)
    await backend.start_cluster(cluster, {})
    assert f"AS_USER={me}" in (fake_slurm / "sbatch.101.env").read_text().splitlines()


async def test_staging_directory_template_and_safety(backend, tmp_path):
    backend.staging_directory = str(tmp_path / "jobs" / "{username}" / "{cluster_name}")
    cluster = make_cluster(backend, name="c9", username="carol")
    cluster.state = await backend.start_cluster(cluster, {})
    assert cluster.state["staging_dir"] == str(tmp_path / "jobs" / "carol" / "c9")

    backend.staging_directory = "relative/{cluster_name}"
    with pytest.raises(BackendError, match="must be an absolute path"):
        await backend.start_cluster(make_cluster(backend), {})

    # a directory without our marker is never removed
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    other = make_cluster(backend, name="c8")
    other.state = {"job_id": "5", "staging_dir": str(precious)}
    await backend.stop_cluster(other)
    assert (precious / "data").exists()


# --- status checks ----------------------------------------------------------------------


async def test_check_clusters_and_workers_batch_into_one_squeue_call(backend, fake_slurm):
    (fake_slurm / "squeue.out").write_text(
        "201 RUNNING None\n202 PENDING Resources\n301 RUNNING None\n302 FAILED NonZeroExitCode\n"
    )
    clusters = []
    for i, (sched, workers) in enumerate([("201", ["301", "302"]), ("202", [])]):
        c = make_cluster(backend, name=f"c{i}")
        c.state = {"job_id": sched, "staging_dir": str(fake_slurm)}
        for j in workers:
            w = Worker(name=f"w{j}", cluster_name=c.name, status=JobStatus.RUNNING)
            w.state = {"job_id": j, "staging_dir": str(fake_slurm)}
            c.workers[w.name] = w
        clusters.append(c)
    (fake_slurm / "worker-w302.log").write_text("starting\nImportError: no module named x\n")

    assert await backend.check_clusters(clusters) == [
        (True, ""),
        (True, "Slurm job 202 is pending: Resources"),
    ]
    c0 = clusters[0]
    result = await backend.check_workers(c0, list(c0.workers.values()))
    assert result[0] == (True, "")
    alive, reason = result[1]
    assert not alive
    assert reason.startswith("Slurm job 302 failed (FAILED, NonZeroExitCode). Last lines of ")
    assert reason.endswith("worker-w302.log: starting | ImportError: no module named x")
    calls = (fake_slurm / "squeue.calls").read_text().splitlines()
    assert calls == ["--noheader --states=all --jobs=201,202,301,302 --format=%i %T %r"]


async def test_concurrent_checks_share_queue_calls(backend, fake_slurm):
    backend.status_cache_seconds = 0
    (fake_slurm / "squeue.out").write_text("1 RUNNING None\n2 RUNNING None\n3 RUNNING None\n")
    (fake_slurm / "squeue.delay").write_text("0.3")
    clusters = []
    for i in range(3):
        c = make_cluster(backend, name=f"c{i}")
        c.state = {"job_id": str(i + 1)}
        clusters.append(c)
    results = await asyncio.gather(*(backend.check_clusters([c]) for c in clusters))
    assert results == [[(True, "")]] * 3
    assert len((fake_slurm / "squeue.calls").read_text().splitlines()) == 1


async def test_jobs_squeue_forgot_are_looked_up_in_sacct(backend, fake_slurm):
    (fake_slurm / "squeue.out").write_text("")
    (fake_slurm / "squeue.rc").write_text("1")
    (fake_slurm / "squeue.err").write_text("slurm_load_jobs error: Invalid job id specified\n")
    (fake_slurm / "sacct.out").write_text("44|TIMEOUT|0:0|None\n")
    c = make_cluster(backend)
    c.state = {"job_id": "44"}
    [(alive, reason)] = await backend.check_clusters([c])
    assert not alive
    assert reason == (
        "Slurm job 44 was killed: it reached its time limit (walltime) (TIMEOUT, exit code 0:0)"
    )
    assert "--jobs=44" in (fake_slurm / "sacct.calls").read_text()

    # without accounting the job is simply gone
    (fake_slurm / "sacct.out").write_text("")
    (fake_slurm / "sacct.rc").write_text("1")
    backend.status_cache_seconds = 0
    [(alive, reason)] = await backend.check_clusters([c])
    assert (alive, reason) == (False, "Slurm job 44 ended (UNKNOWN, no longer known to the queue)")


async def test_unreachable_queue_keeps_jobs_alive(backend, fake_slurm, caplog):
    (fake_slurm / "squeue.rc").write_text("1")
    (fake_slurm / "squeue.err").write_text(
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    )
    c = make_cluster(backend)
    c.state = {"job_id": "7"}
    assert await backend.check_clusters([c]) == [(True, "")]


async def test_command_timeout(backend, fake_slurm):
    backend.command_timeout = 1
    (fake_slurm / "squeue.delay").write_text("30")
    c = make_cluster(backend)
    c.state = {"job_id": "7"}
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await backend.check_clusters([c]) == [(True, "")]
    assert loop.time() - start < 10


async def test_cluster_without_a_job_is_not_alive(backend):
    c = make_cluster(backend)
    assert await backend.check_clusters([c]) == [(False, "no Slurm job was submitted")]


async def test_pending_reason_explains_a_start_timeout(backend, fake_slurm):
    (fake_slurm / "squeue.out").write_text("31 PENDING QOSMaxJobsPerUserLimit\n")
    c = make_cluster(backend)
    c.state = {"job_id": "31", "staging_dir": str(fake_slurm)}
    note = "Slurm job 31 is pending: QOSMaxJobsPerUserLimit"
    assert await backend.check_clusters([c]) == [(True, note)]
    assert await backend.log_tail(c, lines=5) == note
    (fake_slurm / "scheduler.log").write_text("distributed.scheduler - INFO - hello\n")
    assert await backend.log_tail(c, lines=5) == "distributed.scheduler - INFO - hello"


async def test_log_tail_of_the_scheduler_and_of_each_worker(backend, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    c = make_cluster(backend)
    c.state = {"job_id": "1", "staging_dir": str(staging)}
    w = Worker(name="w1", cluster_name="c1", state={"job_id": "2", "staging_dir": str(staging)})
    assert await backend.log_tail(c) == "" and await backend.log_tail(c, w) == ""
    (staging / "scheduler.log").write_text("".join(f"s{i}\n" for i in range(100)) + "\n\n")
    (staging / "worker-w1.log").write_text("starting\nconnected\n")
    assert await backend.log_tail(c, lines=3) == "s97\ns98\ns99"
    assert len((await backend.log_tail(c)).splitlines()) == 50
    assert await backend.log_tail(c, w, lines=5) == "starting\nconnected"
    # a name unfit for a file name reads nothing
    assert await backend.log_tail(c, Worker(name="../x", cluster_name="c1", state=w.state)) == ""


async def test_log_tail_follows_no_link_the_user_planted(backend, tmp_path, accounts):
    """Multi-user mode: the staging directory is alice's; root reads only her files."""
    alice = accounts["alice"]
    staging = tmp_path / "staging"
    staging.mkdir()
    os.chown(staging, alice.pw_uid, alice.pw_gid)
    secret = tmp_path / "root-only"
    secret.write_text("root secret\n")
    secret.chmod(0o600)
    c = make_cluster(backend)
    c.state = {"job_id": "1", "staging_dir": str(staging), "uid": alice.pw_uid}
    w = Worker(name="w1", cluster_name="c1", state={**c.state, "job_id": "2"})
    for name in ("scheduler.log", "worker-w1.log"):
        (staging / name).symlink_to(secret)
        os.lchown(staging / name, alice.pw_uid, alice.pw_gid)
    assert await backend.log_tail(c) == "" and await backend.log_tail(c, w) == ""
    # a hard link to root's file is not alice's file either
    (staging / "worker-w1.log").unlink()
    os.link(secret, staging / "worker-w1.log")
    assert await backend.log_tail(c, w) == ""
    # a dead job's reason quotes none of it
    (staging / "worker-w1.log").unlink()
    (staging / "worker-w1.log").symlink_to(secret)
    backend.status_command = write_exe(tmp_path / "squeue", "#!/bin/sh\necho '2 FAILED None'\n")
    [(alive, reason)] = await backend.check_workers(c, [w])
    assert not alive and "root secret" not in reason and "Last lines" not in reason
    # her own regular file is read
    (staging / "worker-w1.log").unlink()
    (staging / "worker-w1.log").write_text("her own line\n")
    os.chown(staging / "worker-w1.log", alice.pw_uid, alice.pw_gid)
    assert await backend.log_tail(c, w) == "her own line"


def test_queue_commands_are_declared_on_the_base():
    for name, default in (("submit", "sbatch"), ("status", "squeue"), ("cancel", "scancel")):
        trait = JobQueueBackend.class_traits()[f"{name}_command"]
        assert trait.metadata.get("config") and trait.help
        assert getattr(SlurmBackend(), f"{name}_command") == default


async def test_multi_user_mode_refuses_users_without_an_account_or_as_root(backend, accounts):
    await backend.check_owner("root")  # no wrapper: jobs run as the gateway's account
    backend.submit_wrapper = ["runuser", "-u", "{username}", "--"]
    await backend.check_owner("alice")
    with pytest.raises(Conflict, match="no account"):
        await backend.check_owner("no-such-user-here")
    backend.user_accounts = {"admin": "root"}
    with pytest.raises(Conflict, match="never run as root"):
        await backend.check_owner("admin")


def test_default_staging_directory_follows_the_wrapper():
    assert SlurmBackend().staging_directory == "{state_dir}/staging/{cluster_name}"
    wrapped = SlurmBackend(submit_wrapper=["sudo", "-nu", "{username}"])
    assert wrapped.staging_directory == "{home}/.dask-gateway/staging/{cluster_name}"


def test_staging_parents_for_jobs_of_another_user(tmp_path, accounts):
    alice = accounts["alice"]
    shared = tmp_path / "shared" / "staging" / "c1"
    make_staging_dirs(str(shared), alice)
    # parents root creates can be passed through, not listed; the directory is the user's
    assert stat.S_IMODE(os.stat(tmp_path / "shared").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    assert os.stat(shared).st_uid == alice.pw_uid
    # inside a directory of the user's, root creates nothing (the user does, as the user)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, alice.pw_uid, alice.pw_gid)
    make_staging_dirs(str(home / ".dask-gateway" / "c2"), alice)
    assert not (home / ".dask-gateway").exists()
    # a link on the way, or a directory of someone else's, stops root
    (tmp_path / "link").symlink_to(tmp_path / "shared")
    with pytest.raises(OSError):
        make_staging_dirs(str(tmp_path / "link" / "c3"), alice)
    other = tmp_path / "bobs"
    other.mkdir()
    os.chown(other, accounts["bob"].pw_uid, accounts["bob"].pw_gid)
    with pytest.raises(OSError, match="belongs to uid"):
        make_staging_dirs(str(other / "c4"), alice)
    assert not (other / "c4").exists()
