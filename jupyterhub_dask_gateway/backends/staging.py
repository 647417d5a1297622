"""File work in a job-queue cluster's staging directory, done as the job's user.

In multi-user mode (gateway as root, ``submit_wrapper``) the staging directory
belongs to the user, who may plant links in it. Root never writes, reads or
removes anything there: the gateway runs this file as the user, through the same
wrapper that submits the jobs (``python -I staging.py`` with one JSON request on
stdin), so a planted link leads only where the user could go anyway. Without a
wrapper the backend calls the same functions in-process, as its own account.

Small on purpose: it imports only the standard library and the package's
stdlib-only ``files`` module, and is run by path (``-I``: no user site, no
environment), so it starts in milliseconds.

Requests: ``{"op": "write", "dir": ..., "files": {name: text}}`` creates the
directory (0700) if needed and writes each file atomically (0600, ``files.write_private``);
``{"op": "remove", "dir": ..., "marker": name}`` removes the directory if it holds
the marker; ``{"op": "unlink", "dir": ..., "names": [...]}`` removes files.
"""

import json
import os
import shutil
import sys

from jupyterhub_dask_gateway.files import write_private


def _plain_name(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    return name


def write(directory: str, files: dict) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    for name, text in files.items():
        # a reader (a job starting) sees the old file or the new one, never half of it
        write_private(os.path.join(directory, _plain_name(name)), text, replace=True)


def remove(directory: str, marker: str) -> None:
    if os.path.isfile(os.path.join(directory, _plain_name(marker))):
        shutil.rmtree(directory, ignore_errors=True)


def unlink(directory: str, names) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(directory, _plain_name(name)))
        except OSError:
            pass


def run(request: dict) -> None:
    op = request["op"]
    if op == "write":
        write(request["dir"], request["files"])
    elif op == "remove":
        remove(request["dir"], request["marker"])
    elif op == "unlink":
        unlink(request["dir"], request["names"])
    else:
        raise ValueError(f"unknown op {op!r}")


def main() -> int:
    os.umask(0o077)
    try:
        run(json.loads(sys.stdin.read()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"staging: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
