"""A pre-imported Python process that becomes a scheduler or a worker on request.

``python -m jupyterhub_dask_gateway.backends.warm`` imports distributed (the slow
part of starting a scheduler, ~1.5 s) and waits for one JSON line on stdin:
``{"module": "distributed.cli.dask_scheduler", "argv": [...], "env": {...},
"cwd": "...", "log": "..."}``. It then detaches from the gateway (stdin closed,
output to the log file, new session already) and runs the module as ``__main__``.
If stdin reaches EOF first (the gateway went away), it exits quietly, so idle
warm processes never outlive their gateway.
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


def main():
    _preimport()

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
