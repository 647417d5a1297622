"""Users are isolated on the local backend: each cluster runs as its owner's own account.

A standalone gateway started as root with default settings; alice and bob are real
accounts (the ``accounts`` fixture). Bob's own scheduler code tries every side door
into alice's cluster and the gateway's state; each must be shut.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request

import cloudpickle
import psutil
import pytest

from helpers import PASSWORD, free_port, kill_all, port_open, processes_under, wait_for

# The functions below run on schedulers, which cannot import this module: ship them whole.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _scheduler_facts(dask_scheduler):
    """Runs on a scheduler: who it runs as, and its addresses."""
    import os

    plugin = dask_scheduler.plugins["jupyterhub-dask-gateway"]
    body = plugin.heartbeat_body()
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "home": os.environ.get("HOME"),
        "user": os.environ.get("USER"),
        "environ": sorted(os.environ),
        "dashboard": body["dashboard_address"],
        "api": body["api_address"],
    }


def _probe(paths, victim_pid, dashboard, api):
    """Runs on the attacker's scheduler: what of the victim's and the gateway's it can reach."""
    import os
    import urllib.error
    import urllib.request

    reached = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
            reached[path] = "read"
        except OSError as e:
            reached[path] = type(e).__name__
    try:
        os.kill(victim_pid, 0)
        reached["signal"] = "sent"
    except OSError as e:
        reached["signal"] = type(e).__name__

    def fetch(url, data=None):
        try:
            with urllib.request.urlopen(url, data=data, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            return type(e).__name__

    reached["dashboard"] = fetch(dashboard + "/status")
    reached["dashboard_health"] = fetch(dashboard + "/health")
    reached["control"] = fetch(api + "/api/comm", data=b'{"op": "scale", "count": 5}')
    return reached


def test_two_accounts_are_isolated(gateway, accounts):
    with gateway.gateway("alice") as alice, gateway.gateway("bob") as bob:
        with alice.new_cluster() as a_cluster, bob.new_cluster() as b_cluster:
            a_cluster.scale(1)
            b_cluster.scale(1)
            with (
                a_cluster.get_client(set_as_default=False) as a,
                b_cluster.get_client(set_as_default=False) as b,
            ):
                a.wait_for_workers(1, timeout=60)
                b.wait_for_workers(1, timeout=60)
                # Both compute, on workers of their own accounts.
                assert a.submit(sum, [1, 2]).result() == 3
                assert b.submit(sum, [3, 4]).result() == 7
                assert set(a.run(os.getuid).values()) == {accounts["alice"].pw_uid}
                assert set(b.run(os.getuid).values()) == {accounts["bob"].pw_uid}

                a_facts = a.run_on_scheduler(_scheduler_facts)
                b_facts = b.run_on_scheduler(_scheduler_facts)
                for facts, name in ((a_facts, "alice"), (b_facts, "bob")):
                    entry = accounts[name]
                    assert facts["uid"] == entry.pw_uid and facts["gid"] == entry.pw_gid
                    assert set(facts["groups"]) == set(os.getgrouplist(name, entry.pw_gid))
                    assert facts["home"] == entry.pw_dir and facts["user"] == name
                    # Nothing of the gateway's environment (only what a cluster needs).
                    assert not [k for k in facts["environ"] if k.startswith("JUPYTERHUB_")]
                    assert "JHDG_PROXY_TOKEN" not in facts["environ"]
                    assert os.stat(facts["cwd"]).st_uid == entry.pw_uid
                    assert oct(os.stat(facts["cwd"]).st_mode & 0o777) == oct(0o700)

                state_files = [e.path for e in os.scandir(gateway.state_dir) if e.is_file()]
                assert {"gateway.sqlite", "encryption.key", "proxy.token"} <= {
                    os.path.basename(p) for p in state_files
                }
                alice_dir = a_facts["cwd"]
                paths = [
                    gateway.state_dir,
                    *state_files,
                    alice_dir,
                    f"{alice_dir}/.certs/dask.pem",
                    f"{alice_dir}/logs/scheduler.log",
                    f"/proc/{gateway.proc.pid}/environ",
                ]
                reached = b.run_on_scheduler(
                    _probe, paths, a_facts["pid"], a_facts["dashboard"], a_facts["api"]
                )
                for path in paths:
                    assert reached[path] == "PermissionError", (path, reached[path])
                assert reached["signal"] == "PermissionError"
                assert reached["dashboard"] == 403
                assert reached["dashboard_health"] == 403
                assert reached["control"] == 403
                # Alice's cluster is untouched by all that, and her own dashboard works
                # through the gateway (which adds the key).
                assert a.submit(sum, [5, 6]).result() == 11
                assert len(a.scheduler_info()["workers"]) == 1
                route = a_cluster.dashboard_link
                req = urllib.request.Request(route)
                req.add_header("Authorization", _basic("alice"))
                with urllib.request.urlopen(req, timeout=30) as r:
                    assert r.status == 200


def _basic(user: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()


def test_a_user_without_an_account_is_refused(gateway):
    with gateway.gateway("nobody-here") as stranger:
        with pytest.raises(Exception, match="no account"):
            stranger.new_cluster()
        assert stranger.list_clusters() == []
    # Nothing was started or created for it.
    assert os.listdir(os.path.join(gateway.state_dir, "clusters")) == []


def _listener_as(account: str, name: str):
    """A process of ``account`` listening on the abstract socket ``name``; it reports
    on stdout whether it was handed a descriptor within 3 s."""
    script = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\\0" + {name[1:]!r})
        s.listen(8)
        print("ready", flush=True)
        s.settimeout(3)
        try:
            while True:
                c, _ = s.accept()
                c.settimeout(1)
                try:
                    msg, fds, _, _ = socket.recv_fds(c, 1, 1)
                except OSError:
                    continue
                if fds:
                    print("got-fd", flush=True)
                    c.sendall(b"K")
        except OSError:
            print("done", flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], user=account, stdout=subprocess.PIPE, text=True, cwd="/"
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def test_hand_off_only_to_the_expected_listener(accounts):
    """A hand-off name squatted by another account receives nothing."""
    from jupyterhub_dask_gateway.proxy.handoff import hand_off

    alice_uid = accounts["alice"].pw_uid
    name = f"@jhdg-test-squat-{os.getpid()}"
    squatter = _listener_as("bob", name)
    try:
        client, _server = socket.socketpair()
        with client, _server:
            # The route says alice's scheduler (any pid of hers, or a given one): refused.
            assert await hand_off(name, client, timeout=5, uid=alice_uid) is False
            assert await hand_off(name, client, timeout=5, uid=alice_uid, pid=1) is False
            # Bob's uid but not the scheduler's pid: refused too.
            bob_uid = accounts["bob"].pw_uid
            assert await hand_off(name, client, timeout=5, uid=bob_uid, pid=1) is False
            # The right uid and pid: handed (so the refusals above were the check's).
            assert await hand_off(name, client, timeout=5, uid=bob_uid, pid=squatter.pid)
        out, _ = squatter.communicate(timeout=10)
        assert out.split().count("got-fd") == 1
    finally:
        squatter.kill()
        squatter.wait()


def test_restart_reattaches_both_users(make_gateway, accounts):
    gw = make_gateway()
    with gw.gateway("alice") as alice, gw.gateway("bob") as bob:
        clusters = [alice.new_cluster(), bob.new_cluster()]
        names = [c.name for c in clusters]
        gw.kill(signal.SIGKILL)
        gw.start()
        for who, name in (("alice", names[0]), ("bob", names[1])):
            with gw.gateway(who) as fresh:
                wait_for(lambda f=fresh, n=name: f.get_cluster(n).status.name == "RUNNING", 30)
                with fresh.connect(name) as cluster:
                    cluster.scale(1)
                    with cluster.get_client(set_as_default=False) as client:
                        client.wait_for_workers(1, timeout=60)
                        assert client.submit(sum, [1, 1]).result() == 2
                        uids = set(client.run(os.getuid).values())
                        assert uids == {accounts[who].pw_uid}
                    cluster.shutdown()
        for name in names:
            wait_for(
                lambda n=name: not processes_under(f"{gw.state_dir}/clusters/{n}"),
                30,
                what="every process of the stopped cluster to exit",
            )


def _gateway_as(account, directory, extra=""):
    """Start a standalone gateway as ``account`` in ``directory`` (which it owns)."""
    pw = account
    os.makedirs(directory, exist_ok=True)
    os.chown(directory, pw.pw_uid, pw.pw_gid)
    api, proxy = free_port(), free_port()
    config = os.path.join(directory, "config.py")
    with open(config, "w") as f:
        f.write(
            textwrap.dedent(f"""
                c.DaskGateway.address = "127.0.0.1:{api}"
                c.DaskGateway.proxy_address = "127.0.0.1:{proxy}"
                c.DaskGateway.state_dir = {os.path.join(directory, "state")!r}
                c.DaskGateway.authenticator_class = "basic"
                c.BasicAuthenticator.password = {PASSWORD!r}
                c.LocalBackend.warm_pool_size = 0
            """)
            + extra
        )
    log = open(os.path.join(directory, "gateway.log"), "w+")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "jupyterhub-dask-gateway"), "-f", config],
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=[],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": os.environ["PATH"], "HOME": pw.pw_dir},
    )
    return proc, log, api, proxy


def test_non_root_gateway_refuses_shared_accounts_unless_told(tmp_path, accounts):
    bob = accounts["bob"]
    proc, log, _, _ = _gateway_as(bob, str(tmp_path / "default"))
    try:
        assert proc.wait(60) == 1
        log.seek(0)
        out = log.read()
        assert "c.LocalBackend.unsafe_shared_account = True" in out
        assert "could then read each other's clusters" in out
    finally:
        log.close()

    proc, log, api, proxy = _gateway_as(
        bob, str(tmp_path / "shared"), "c.LocalBackend.unsafe_shared_account = True\n"
    )
    try:
        wait_for(lambda: port_open(api) and port_open(proxy), 30, what="the gateway")
        log.seek(0)
        warnings = [ln for ln in log.read().splitlines() if "unsafe_shared_account" in ln]
        assert len(warnings) == 1 and warnings[0].startswith("[W"), warnings
        from dask_gateway import BasicAuth, Gateway

        with Gateway(f"http://127.0.0.1:{proxy}", auth=BasicAuth("alice", PASSWORD)) as g:
            with g.new_cluster() as cluster:
                with cluster.get_client(set_as_default=False) as client:
                    # Shared-account mode: alice's scheduler runs as the gateway's account.
                    assert client.run_on_scheduler(os.getuid) == bob.pw_uid
    finally:
        procs = [psutil.Process(proc.pid)]
        procs += processes_under(str(tmp_path / "shared"))
        proc.send_signal(signal.SIGKILL)
        kill_all(procs)
        log.close()


def test_launcher_refuses_root_and_verifies_the_drop(accounts):
    from jupyterhub_dask_gateway.backends.warm import become

    with pytest.raises(PermissionError, match="root"):
        become({"uid": 0, "gid": 0, "groups": [0]})
    alice = accounts["alice"]
    script = textwrap.dedent(f"""
        import os
        from jupyterhub_dask_gateway.backends.warm import become
        become({{"uid": {alice.pw_uid}, "gid": {alice.pw_gid}, "groups": [{alice.pw_gid}]}})
        print(os.getresuid(), os.getresgid(), os.getgroups())
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    u, g = alice.pw_uid, alice.pw_gid
    assert out.strip() == f"({u}, {u}, {u}) ({g}, {g}, {g}) [{g}]"


def test_a_planted_log_link_never_reaches_the_reason(tmp_path, accounts):
    """The gateway reads failure reasons from the user's directory without following links."""
    from jupyterhub_dask_gateway.accounts import read_tail_as_root

    alice = accounts["alice"]
    workdir = tmp_path / "c1"
    (workdir / "logs").mkdir(parents=True)
    secret = tmp_path / "root-only"
    secret.write_text("root secret\n")
    os.chmod(secret, 0o600)
    (workdir / "logs" / "scheduler.log").symlink_to(secret)
    for p in (workdir / "logs", workdir):
        os.lchown(p, alice.pw_uid, alice.pw_gid)
    assert read_tail_as_root(str(workdir), "logs/scheduler.log", alice.pw_uid) == ""
    # the logs directory itself replaced by a link to a root directory
    (workdir / "logs" / "scheduler.log").unlink()
    (workdir / "logs").rmdir()
    (tmp_path / "rootdir").mkdir()
    (tmp_path / "rootdir" / "scheduler.log").write_text("root secret\n")
    (workdir / "logs").symlink_to(tmp_path / "rootdir")
    assert read_tail_as_root(str(workdir), "logs/scheduler.log", alice.pw_uid) == ""
    # a file of someone else's (hard link or root-written): refused by owner
    (workdir / "logs").unlink()
    (workdir / "logs").mkdir()
    (workdir / "logs" / "scheduler.log").write_text("root wrote this\n")
    assert read_tail_as_root(str(workdir), "logs/scheduler.log", alice.pw_uid) == ""
    os.chown(workdir / "logs" / "scheduler.log", alice.pw_uid, alice.pw_gid)
    assert read_tail_as_root(str(workdir), "logs/scheduler.log", alice.pw_uid) == (
        "root wrote this\n"
    )
    # a FIFO cannot hang the gateway
    os.mkfifo(workdir / "logs" / "worker.log")
    os.chown(workdir / "logs" / "worker.log", alice.pw_uid, alice.pw_gid)
    assert read_tail_as_root(str(workdir), "logs/worker.log", alice.pw_uid) == ""


async def test_local_log_tails_read_only_the_owners_files(tmp_path, accounts):
    """``log_tail`` (and the reason of a dead process) for the scheduler and each worker:
    only regular files of the owner, in a work dir under ``clusters_directory``."""
    from jupyterhub_dask_gateway.backends.local import LocalBackend
    from jupyterhub_dask_gateway.models import Cluster, Worker

    alice = accounts["alice"]
    backend = LocalBackend(gateway_state_dir=str(tmp_path / "state"))
    assert backend.clusters_directory == str(tmp_path / "state" / "clusters")
    logs = tmp_path / "state" / "clusters" / "c1" / "logs"
    logs.mkdir(parents=True)
    for p in (logs, logs.parent):
        os.chown(p, alice.pw_uid, alice.pw_gid)
    secret = tmp_path / "root-only"
    secret.write_text("root secret\n")
    secret.chmod(0o600)
    cluster = Cluster(name="c1", username="alice", token="t", tls_cert="", tls_key="")
    cluster.state = {"log": str(logs / "scheduler.log"), "uid": alice.pw_uid}
    worker = Worker(name="w1", cluster_name="c1")
    worker.state = {"log": str(logs / "worker-w1.log"), "uid": alice.pw_uid}
    (logs / "scheduler.log").write_text("one\ntwo\n\nthree\n")
    (logs / "worker-w1.log").symlink_to(secret)
    for name in ("scheduler.log", "worker-w1.log"):
        os.lchown(logs / name, alice.pw_uid, alice.pw_gid)

    assert await backend.log_tail(cluster, lines=2) == "\nthree"
    assert await backend.log_tail(cluster) == "one\ntwo\n\nthree"
    assert await backend.log_tail(cluster, worker) == ""  # a link: not followed
    assert await backend.check_clusters([cluster]) == [
        (False, "Scheduler process exited: one | two | three")
    ]
    assert await backend.check_workers(cluster, [worker]) == [(False, "Worker process exited")]
    (logs / "worker-w1.log").unlink()
    (logs / "worker-w1.log").write_text("ImportError: no dask\n")
    assert await backend.log_tail(cluster, worker) == ""  # root's file, not alice's
    os.chown(logs / "worker-w1.log", alice.pw_uid, alice.pw_gid)
    assert await backend.log_tail(cluster, worker) == "ImportError: no dask"
    # a log recorded anywhere but a work dir of clusters_directory is never read
    worker.state = {"log": str(secret), "uid": 0}
    assert await backend.log_tail(cluster, worker) == ""
