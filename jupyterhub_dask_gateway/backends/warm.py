"""The launcher every local scheduler and worker starts from; pre-imported when pooled.

``python -m jupyterhub_dask_gateway.backends.warm`` imports distributed (the slow
part of starting a scheduler, ~1.5 s) and waits for one JSON line on stdin::

    {"module": "distributed.cli.dask_scheduler", "argv": [...], "env": {...},
     "cwd": "...", "log": "...", "account": {"uid": ..., "gid": ..., "groups": [...]}}

It then becomes that process, in this order:

1. drops to ``account`` (supplementary groups, gid, uid: real, effective and saved)
   and checks the change cannot be undone; nothing the user controls has been read
   yet, and nothing of the gateway's is in this process (it was started with a
   clean environment and has read nothing but stdin and the installed packages);
2. enters the cluster's directory, replaces its environment with ``env``, and sends
   its output to ``log`` (opened as the user, so a link planted there gets nothing
   the user could not write anyway);
3. runs the module as ``__main__``.

Without ``account`` (shared-account mode) step 1 is skipped. If stdin reaches EOF
first (the gateway went away), it exits quietly, so idle pooled processes never
outlive their gateway. The backend uses the same launcher without a pool, so
there is one way to start a process as a user.
"""

import json
import os
import runpy
import sys


def _preimport():
    """Import what a scheduler or worker imports while it starts (the point of the pool)."""
    import importlib

    import dask
    import distributed  # noqa: F401
    import distributed.cli.dask_scheduler  # noqa: F401
    import distributed.cli.dask_worker  # noqa: F401

    import jupyterhub_dask_gateway.scheduler_preload  # noqa: F401

    # The dashboards (bokeh, ~0.4 s) and HTTP route modules are imported inside
    # Scheduler/Worker construction; both roles serve a dashboard, so paying this
    # now costs no memory the process would not use anyway.
    optional = [
        *dask.config.get("distributed.scheduler.http.routes", []),
        *dask.config.get("distributed.worker.http.routes", []),
        "distributed.dashboard.scheduler",
        "distributed.dashboard.worker",
    ]
    for name in optional:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # e.g. no bokeh: the scheduler or worker will not import it either


def become(account: dict) -> None:
    """Drop to ``account`` for good: groups, then gid, then uid; verified.

    Raises ``PermissionError`` (or ``OSError``) if any step fails or the old
    identity could be regained; the caller must then exit without running anything.
    """
    uid, gid = int(account["uid"]), int(account["gid"])
    groups = sorted({int(g) for g in account.get("groups", [gid])})
    if uid == 0:
        raise PermissionError("refusing to run a cluster process as root")
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError("the uid/gid change did not take")
    if sorted(set(os.getgroups())) != groups:
        raise PermissionError("the supplementary groups did not take")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PermissionError("root could be regained after dropping privileges")


def run(request: dict) -> None:
    """Become the process ``request`` describes (the steps in the module docstring)."""
    account = request.get("account")
    if account:
        become(account)
    os.umask(0o077)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(devnull)
    import dask

    dask.config.refresh()
    sys.argv = [request["module"], *request["argv"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def main():
    _preimport()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    try:
        request = json.loads(line)
        if request.get("account"):
            become(request["account"])
            request["account"] = None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        # Nothing ran; stderr is the gateway's log of this launcher.
        print(f"jupyterhub_dask_gateway launcher: {exc}", file=sys.stderr)
        return 70
    run(request)
    return 0


if __name__ == "__main__":
    sys.exit(main())
