"""Slurm start latency: this gateway's SlurmBackend vs dask-gateway-server's, same Slurm.

Usage: ``python bench/slurm.py [--quick] [--runs N] [--no-doc]``

Needs the localhost Slurm of ``scripts/slurm-localhost.sh`` (run it first as root).
For each run, interleaved, each gateway gets ``new_cluster()`` (client call until
RUNNING: the scheduler's job was submitted, started by slurmd and has sent its first
heartbeat) and then ``scale(2)`` until both worker jobs have joined the scheduler;
the cluster is shut down and its jobs are gone from ``squeue`` before the next run.

The reference submits jobs through ``sudo -nHu <user> dask-gateway-jobqueue-launcher``
with an empty environment. This image has no sudo and the benchmark runs as root, so
a stand-in ``sudo`` script (below) drops the options, sets ``HOME`` as ``-H`` would,
switches user with ``runuser`` only when the target user is not the current one, and
execs the launcher. Because the reference spawns ``sudo`` with ``env={}``, Python
looks it up on ``os.defpath``, not on ``PATH``; the reference's config file prepends
the stand-in's directory to ``os.defpath`` in the reference process only (nothing is
installed system-wide). Cluster owner on both sides: ``root`` (the reference formats
its staging directory from the owner's passwd entry, so the user must exist).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import textwrap
import time

import harness as h
from harness import OURS, REF, log

SUDO_STANDIN = r"""#!/bin/sh
# Stand-in for `sudo -nHu USER CMD...` (no sudo on this image; the benchmark runs as root).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
user=$(id -un)
while [ $# -gt 0 ]; do
  case "$1" in
    -u) user=$2; shift 2 ;;
    -*u) user=$2; shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
HOME=$(getent passwd "$user" | cut -d: -f6)
USER=$user
LOGNAME=$user
export HOME USER LOGNAME
if [ "$user" != "$(id -un)" ]; then
  exec runuser -u "$user" -- "$@"
fi
exec "$@"
"""

USER = "root"


def slurm_ready() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(
        ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=10
    )
    return out.returncode == 0 and any(
        s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.splitlines()
    )


def jobs_under(directory: str) -> list[str]:
    """Ids of Slurm jobs whose working directory is inside ``directory``."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%Z"], capture_output=True, text=True, timeout=30
    )
    ids = []
    for line in out.stdout.splitlines():
        job_id, _, workdir = line.strip().partition("|")
        if workdir.startswith(directory):
            ids.append(job_id)
    return ids


def cancel_jobs_under(directory: str) -> None:
    ids = jobs_under(directory)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
        h.wait_for(lambda: not jobs_under(directory), 60, "cancelled jobs to leave squeue", 0.2)


def servers_for(scratch) -> dict[str, h.Server]:
    shim_dir = scratch / "sudo-standin"
    shim_dir.mkdir()
    shim = shim_dir / "sudo"
    shim.write_text(SUDO_STANDIN)
    shim.chmod(0o755)
    py = str(h.reference_python())
    scheduler_cmd = [py, "-m", "distributed.cli.dask_scheduler"]
    worker_cmd = [py, "-m", "distributed.cli.dask_worker"]
    launcher = h.REFERENCE_VENV / "bin" / "dask-gateway-jobqueue-launcher"
    ours = h.OurGateway(
        scratch / "ours",
        textwrap.dedent("""
            c.DaskGateway.backend_class = "slurm"
            c.SlurmClusterConfig.scheduler_memory = "512 M"
            c.SlurmClusterConfig.worker_memory = "1 G"
        """),
    )
    ref = h.ReferenceGateway(
        scratch / "ref",
        textwrap.dedent(f"""
            import os
            # sudo stand-in: the reference runs `sudo` with env={{}}, i.e. looked up on
            # os.defpath (see bench/slurm.py)
            os.defpath = {str(shim_dir)!r} + ":" + os.defpath
            c.SlurmBackend.dask_gateway_jobqueue_launcher = {str(launcher)!r}
            c.SlurmClusterConfig.staging_directory = {str(scratch / "ref-staging") + "/"!r}
            c.SlurmClusterConfig.scheduler_cmd = {scheduler_cmd!r}
            c.SlurmClusterConfig.worker_cmd = {worker_cmd!r}
            c.SlurmClusterConfig.scheduler_memory = "512 M"
            c.SlurmClusterConfig.worker_memory = "1 G"
        """),
        backend="dask_gateway_server.backends.jobqueue.slurm.SlurmBackend",
    )
    return {OURS: ours, REF: ref}


def run_once(server, scratch, samples: dict, errors: list) -> None:
    h.time_start_and_scale(server, USER, 2, samples, errors)
    # the next run starts on an empty queue
    h.wait_for(lambda: not jobs_under(str(scratch)), 60, "the cluster's jobs to end", 0.2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs")
    parser.add_argument("--runs", type=int, default=None, help="runs per gateway (default 4)")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 4)
    if not slurm_ready():
        print("No usable Slurm: run scripts/slurm-localhost.sh (as root) first.", file=sys.stderr)
        return 2
    gc.disable()
    h.quiet_gateway_finalizers()
    h.ensure_reference()
    scratch = h.scratch_dir("jhdg-bench-slurm-")
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    samples: dict = {}
    errors: list[str] = []
    servers = servers_for(scratch)
    try:
        for s in servers.values():
            s.start()
        order = list(servers.values())
        for i in range(runs):
            for s in order if i % 2 == 0 else order[::-1]:
                h.settle()
                log(f"run {i + 1}/{runs}: {s.label}")
                run_once(s, scratch, samples, errors)
                gc.collect()
    finally:
        for s in servers.values():
            s.cleanup()
        cancel_jobs_under(str(scratch))
        h.kill_processes(h.processes_in(str(scratch)))
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    rows = []
    for key, label in (
        ("start", "new_cluster() on Slurm (submit → scheduler job RUNNING → heartbeat)"),
        ("workers", "scale(2) → 2 worker jobs joined"),
    ):
        o, r = h.median(samples.get((key, OURS), [])), h.median(samples.get((key, REF), []))
        rows.append(
            [
                label,
                "n/a" if o is None else f"{o:.2f} s",
                "n/a" if r is None else f"{r:.2f} s",
                "n/a" if not (o and r) else f"{o / r:.2f}×",
                f"{len(samples.get((key, OURS), []))} / {len(samples.get((key, REF), []))}",
            ]
        )
    table = h.markdown_table(
        [
            "metric (median)",
            "ours (SlurmBackend)",
            "dask-gateway-server 2026.3 SlurmBackend",
            "ours ÷ ref",
            "samples ours / ref",
        ],
        rows,
    )
    command = (
        "python bench/slurm.py"
        + (" --quick" if args.quick else "")
        + (f" --runs {args.runs}" if args.runs else "")
    )
    how = f"{runs} runs per gateway, interleaved, medians"
    body = h.report(command, how, elapsed, load_start, table, [f"error: {e}" for e in errors])
    print(body)
    if not args.no_doc:
        h.write_section("slurm", body)
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
