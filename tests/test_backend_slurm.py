"""End to end: the real dask-gateway client, a gateway from its CLI, a real Slurm on 127.0.0.1.

Needs the localhost Slurm of ``scripts/slurm-localhost.sh`` (``.ci/run`` starts it); the
tests are skipped only when Slurm's ``sinfo`` is not installed at all. Every job a test
submits carries a ``--comment`` tag, and every tagged job left over is cancelled at the end.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid

import pytest

from helpers import FORGING_SCHEDULER, PASSWORD, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("sinfo") is None, reason="Slurm is not installed (no sinfo on PATH)"
)

# job states in which a job still occupies (or waits for) the queue
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}


def squeue(tag: str) -> list[dict]:
    """This test's jobs that Slurm still lists (any state)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%k"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, name, state, comment = line.strip().split("|", 3)
        if comment == tag:
            jobs.append({"id": job_id, "name": name, "state": state})
    return jobs


def live_jobs(tag: str, cluster_name: str, role: str) -> list[dict]:
    name = f"dask-{role}-{cluster_name}"
    return [j for j in squeue(tag) if j["name"] == name and j["state"] in LIVE]


def running_jobs(tag, cluster_name, role, count):
    jobs = live_jobs(tag, cluster_name, role)
    if len(jobs) == count and all(j["state"] == "RUNNING" for j in jobs):
        return jobs
    return None


@pytest.fixture(autouse=True)
def collect_garbage():
    """Run finalizers of the test's dask client objects now, not in the middle of a later
    ``ast.parse``: on CPython 3.11.7 a finalizer that formats a traceback inside another
    AST conversion corrupts the AST recursion counter (cpython gh-106905), and pytest
    ends with "SystemError: AST constructor recursion depth mismatch"."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def slurm():
    """The localhost Slurm, checked once: its node must be usable within 30 s."""

    def node_ready():
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=10
        )
        return out.returncode == 0 and any(
            s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.splitlines()
        )

    wait_for(node_ready, 30, 0.2, "a usable Slurm node (run scripts/slurm-localhost.sh)")


@pytest.fixture
def slurm_tag(slurm):
    """A tag on every Slurm job of one test; jobs still carrying it are cancelled after."""
    tag = f"jhdg-test-{uuid.uuid4().hex[:12]}"
    yield tag
    ids = [j["id"] for j in squeue(tag) if j["state"] in LIVE]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
        wait_for(
            lambda: not [j for j in squeue(tag) if j["state"] in LIVE],
            30,
            0.2,
            "leftover test jobs to be cancelled",
        )


def slurm_config(tag: str, extra: str = "") -> str:
    return f"""
c.DaskGateway.backend_class = "slurm"
c.SlurmClusterConfig.scheduler_memory = "512 M"
c.SlurmClusterConfig.worker_memory = "512 M"
c.SlurmClusterConfig.scheduler_extra_directives = ["--comment={tag}"]
c.SlurmClusterConfig.worker_extra_directives = ["--comment={tag}"]
c.SlurmBackend.status_cache_seconds = 1
{extra}
"""


def details(gw, name: str) -> dict:
    """What the gateway tells the cluster's owner about it (the panel's view)."""
    return api_json(gw, f"cluster-details/{name}")


def api_json(gw, path: str, **params) -> dict:
    """``GET api/v1/<path>`` as the cluster's owner."""
    url = f"{gw.address}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    req = urllib.request.Request(url)
    cred = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {cred}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def test_cluster_lifecycle_on_slurm(slurm_tag, make_gateway):
    gw = make_gateway(slurm_config(slurm_tag))
    with gw.gateway() as g:
        cluster = g.new_cluster()
        try:
            name = cluster.name
            [scheduler_job] = wait_for(
                lambda: running_jobs(slurm_tag, name, "scheduler", 1), 30, 0.2, "scheduler job"
            )
            staging = os.path.join(gw.state_dir, "staging", name)
            assert os.stat(staging).st_mode & 0o777 == 0o700
            assert os.stat(os.path.join(staging, "dask.pem")).st_mode & 0o777 == 0o600

            cluster.scale(2)
            worker_jobs = wait_for(
                lambda: running_jobs(slurm_tag, name, "worker", 2), 60, 0.2, "2 worker jobs"
            )
            client = cluster.get_client(set_as_default=False)
            try:
                client.wait_for_workers(2, timeout=60)
                assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
                squares = client.map(lambda x: x * x, range(100))
                assert sum(client.gather(squares)) == 328350
                # every worker runs inside one of the worker jobs Slurm lists
                ran_in = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
                assert ran_in == {j["id"] for j in worker_jobs}

                cluster.scale(1)
                wait_for(
                    lambda: len(live_jobs(slurm_tag, name, "worker")) == 1,
                    60,
                    0.2,
                    "one worker job to be cancelled",
                )
                wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 30, 0.2, "1 worker")
                assert client.submit(lambda: 7 * 6).result(timeout=60) == 42
                # The owner reads the jobs' output through the gateway (the logs endpoint).
                logs = api_json(gw, f"clusters/{name}/logs", tail=200)
                assert "Scheduler at" in logs["text"]
                (worker,) = client.scheduler_info()["workers"].values()
                worker_log = api_json(gw, f"clusters/{name}/logs", process=str(worker["name"]))
                assert "Start worker" in worker_log["text"]
                kinds = [e["kind"] for e in api_json(gw, f"clusters/{name}/events")["events"]]
                assert kinds[:2] == ["created", "started"] and "worker_running" in kinds
            finally:
                client.close()
        finally:
            cluster.shutdown()
        wait_for(lambda: not squeue_live(slurm_tag), 60, 0.2, "every job of the cluster to end")
        assert scheduler_job["id"] not in {j["id"] for j in squeue_live(slurm_tag)}
        wait_for(lambda: not os.path.exists(staging), 30, 0.1, "the staging directory to go")


def squeue_live(tag):
    return [j for j in squeue(tag) if j["state"] in LIVE]


def test_rejected_submission_shows_the_queue_error(slurm_tag, make_gateway):
    from dask_gateway import GatewayClusterError

    gw = make_gateway(slurm_config(slurm_tag, 'c.SlurmClusterConfig.partition = "no-such-part"'))
    with gw.gateway() as g:
        name = g.submit()
        # sbatch's own words reach the client's exception
        with pytest.raises(GatewayClusterError, match="Invalid partition name specified"):
            g.connect(name)
        info = details(gw, name)
    assert info["status"] == "FAILED"
    # sbatch's own words reach the user
    assert "Invalid partition name specified" in info["reason"], info["reason"]
    assert "Slurm rejected the scheduler job" in info["reason"]
    assert not squeue_live(slurm_tag)
    assert not os.path.exists(os.path.join(gw.state_dir, "staging", name))


def test_a_job_that_dies_fails_its_cluster_with_the_queue_reason(slurm_tag, make_gateway):
    from dask_gateway import GatewayClusterError

    setup = "c.SlurmClusterConfig.scheduler_setup = 'echo cannot load module dask >&2; exit 7'"
    gw = make_gateway(slurm_config(slurm_tag, setup))
    with gw.gateway() as g:
        name = g.submit()
        with pytest.raises(GatewayClusterError):
            g.connect(name)
        reason = details(gw, name)["reason"]
    assert reason.startswith("Slurm job "), reason
    assert "failed (FAILED, NonZeroExitCode)" in reason
    assert reason.endswith("scheduler.log: cannot load module dask"), reason
    assert not squeue_live(slurm_tag)


def test_gateway_sigkill_and_restart_keeps_slurm_cluster(slurm_tag, make_gateway):
    gw = make_gateway(slurm_config(slurm_tag))
    with gw.gateway() as g:
        cluster = g.new_cluster(shutdown_on_close=False)
        name = cluster.name
        cluster.scale(1)
        wait_for(lambda: running_jobs(slurm_tag, name, "worker", 1), 60, 0.2, "a worker job")
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        cluster.close()

    before = {j["id"] for j in squeue_live(slurm_tag)}
    assert len(before) == 2
    gw.kill()  # SIGKILL: no chance to clean anything up
    gw.start()
    # the jobs did not notice
    assert {j["id"] for j in squeue_live(slurm_tag)} == before

    with gw.gateway() as g:
        cluster = g.connect(name)
        try:
            cluster.scale(2)
            wait_for(lambda: running_jobs(slurm_tag, name, "worker", 2), 60, 0.2, "2 workers")
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(2, timeout=60)
                assert client.submit(lambda x: x * 2, 21).result(timeout=60) == 42
        finally:
            cluster.shutdown()
    wait_for(lambda: not squeue_live(slurm_tag), 60, 0.2, "every job to be cancelled")


MULTI_USER = 'c.SlurmBackend.submit_wrapper = ["runuser", "-u", "{username}", "--"]'


def snapshot(top: str) -> dict:
    """Owner, mode and content of everything under ``top`` (links not followed)."""
    out = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            content = open(path, "rb").read() if os.path.isfile(path) else b""
            out[path] = (st.st_uid, st.st_gid, st.st_mode, content)
    st = os.lstat(top)
    out[top] = (st.st_uid, st.st_gid, st.st_mode, b"")
    return out


def test_multi_user_jobs_run_as_the_user(slurm_tag, make_gateway, accounts):
    alice = accounts["alice"]
    gw = make_gateway(slurm_config(slurm_tag, MULTI_USER))
    with gw.gateway() as g, g.new_cluster() as cluster:
        staging = os.path.join(alice.pw_dir, ".dask-gateway", "staging", cluster.name)
        assert os.stat(staging).st_uid == alice.pw_uid
        assert os.stat(os.path.join(staging, "dask.pem")).st_uid == alice.pw_uid
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.run_on_scheduler(os.getuid) == alice.pw_uid
            assert set(client.run(os.getuid).values()) == {alice.pw_uid}
    wait_for(lambda: not os.path.exists(staging), 60, 0.2, "the staging directory to go")


def test_planted_links_in_staging_change_nothing_outside(
    slurm_tag, make_gateway, accounts, tmp_path
):
    """Multi-user Slurm as root: links alice plants make root change or read nothing."""
    from dask_gateway import GatewayClusterError

    alice = accounts["alice"]
    target = tmp_path / "root-owned"
    (target / "staging").mkdir(parents=True)
    secret = target / "secret.txt"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    before = snapshot(str(target))
    base = os.path.join(alice.pw_dir, ".dask-gateway")
    shutil.rmtree(base, ignore_errors=True)
    os.symlink(target, base)
    os.lchown(base, alice.pw_uid, alice.pw_gid)
    gw = make_gateway(slurm_config(slurm_tag, MULTI_USER))
    try:
        with gw.gateway() as g:
            name = g.submit()
            with pytest.raises(GatewayClusterError):
                g.connect(name)
            reason = details(gw, name)["reason"]
        assert "root's secret" not in reason
        assert "Staging as alice failed" in reason, reason
        assert snapshot(str(target)) == before
    finally:
        os.unlink(base)

    # A log replaced by a link to a root-only file: the failure reason quotes nothing of it.
    with gw.gateway() as g:
        cluster = g.new_cluster()
        staging = os.path.join(base, "staging", cluster.name)
        log = os.path.join(staging, "scheduler.log")
        os.unlink(log)
        os.symlink(secret, log)
        os.lchown(log, alice.pw_uid, alice.pw_gid)
        [job] = live_jobs(slurm_tag, cluster.name, "scheduler")
        subprocess.run(["scancel", job["id"]], check=True, timeout=30)
        wait_for(lambda: details(gw, cluster.name)["status"] == "FAILED", 60, 0.2, "FAILED")
        assert "root's secret" not in details(gw, cluster.name)["reason"]
        cluster.shutdown()
    assert snapshot(str(target)) == before


def test_forged_scheduler_address_on_slurm_is_refused(slurm_tag, make_gateway, tmp_path):
    """A job posting the cluster's heartbeat with someone else's address: nothing routes there."""
    from dask_gateway import GatewayClusterError

    stub = tmp_path / "forging-python"
    stub.write_text(f"#!{sys.executable}\n" + FORGING_SCHEDULER)
    stub.chmod(0o755)
    forged = json.dumps({"scheduler_address": "tls://10.11.12.13:8786"})
    extra = f"""
c.SlurmClusterConfig.python = {str(stub)!r}
c.SlurmClusterConfig.environment = {{"FORGED": {forged!r}}}
"""
    gw = make_gateway(slurm_config(slurm_tag, extra))
    with gw.gateway() as g:
        name = g.submit()
        with pytest.raises(GatewayClusterError, match="Refused the scheduler's addresses"):
            g.connect(name)
        reason = details(gw, name)["reason"]
    assert "is not the node the job runs on" in reason, reason
    token = open(os.path.join(gw.state_dir, "proxy.token")).read().strip()
    req = urllib.request.Request(f"{gw.api_address}/api/v1/routes")
    req.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert name not in json.load(resp)["routes"]
