"""System accounts that users' processes run as.

Owns the mapping from a gateway user name to a local account (``pwd``/``grp``),
the credentials and the clean environment a process needs to become that
account, the checks that a path is reachable by other accounts, and reading, as
root, the tail of a log such a process wrote. It starts no process: the backends
do (``backends/local.py`` through ``backends/warm.py``, the job-queue backends
through their submit wrapper).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import Conflict


@dataclass(frozen=True)
class Account:
    """Everything a process needs to run as a local account."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "home": self.home,
            "shell": self.shell,
        }

    def environment(self) -> dict:
        """The variables a login would set for this account."""
        return {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": self.shell or "/bin/sh",
        }


def clean_environment(
    inherited: Iterable[str] = (),
    *,
    account: Account | None = None,
    defaults: Mapping | None = None,
    cluster: Mapping | None = None,
    manager: Mapping | None = None,
    tls: Mapping | None = None,
) -> dict:
    """The environment of a process started for a user's cluster, merged in this order
    (a later layer wins):

    1. ``inherited``: the names of the gateway's own variables passed on (an allow-list:
       nothing else of the gateway's environment, such as its Hub token, ever reaches
       a process a user will own);
    2. ``account``'s login variables (``HOME``, ``USER``, ``LOGNAME``, ``SHELL``);
    3. ``defaults``: the backend's own (e.g. ``DASK_TEMPORARY_DIRECTORY``), which the
       cluster's configuration may override;
    4. ``cluster``: the cluster configuration's ``environment``;
    5. ``manager``: what the cluster manager passes (the scheduler preload's variables);
    6. ``tls``: where the cluster's key pair is, last, so nothing points a process at
       another.
    """
    env = {name: os.environ[name] for name in inherited if name in os.environ}
    if account is not None:
        env.update(account.environment())
    for layer in (defaults, cluster, manager, tls):
        env.update(layer or {})
    return env


def lookup_account(name: str, username: str | None = None) -> Account:
    """The account called ``name`` with its supplementary groups (as ``initgroups`` sets them).

    Raises :class:`Conflict` with a message for the user when there is none, or
    when it is root (no user's cluster ever runs as root). 409 rather than 403: the
    dask-gateway client shows the message of a 409 (``GatewayClusterError``) and
    drops that of a 403.
    """
    who = username or name
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, TypeError, ValueError):
        raise Conflict(
            f"User {who!r} has no account {name!r} on the gateway's host; clusters run as "
            "their owner's own account here. Ask an administrator to create it."
        ) from None
    if entry.pw_uid == 0:
        raise Conflict(f"User {who!r} maps to the root account; clusters never run as root")
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return Account(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=groups,
        home=entry.pw_dir,
        shell=entry.pw_shell,
    )


def blocked_for_others(path: str, need_read: bool = False) -> str | None:
    """The first component of ``path`` other accounts cannot pass, or None.

    Checks "other" permission bits only (the accounts in question share no group
    with the gateway's): every ancestor must be searchable, and ``path`` itself
    searchable (and readable with ``need_read``). Symlinks are resolved first.
    """
    real = os.path.realpath(path)
    parts = [real]
    parent = real
    while parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
        parts.append(parent)
    for i, part in enumerate(reversed(parts)):
        try:
            mode = os.stat(part).st_mode
        except OSError:
            return part
        last = i == len(parts) - 1
        if stat.S_ISDIR(mode):
            want = stat.S_IXOTH | (stat.S_IROTH if last and need_read else 0)
        else:
            want = stat.S_IROTH if need_read else 0
        if mode & want != want:
            return part
    return None


def read_tail_as_root(
    directory: str,
    relative: str,
    owner: int | None,
    limit: int = 8192,
    lines: int | None = None,
) -> str:
    """The last ``limit`` bytes of ``directory/relative``, read without trusting the user.

    ``directory`` is a user-owned directory whose own entry the user cannot replace
    (it sits in a directory of the gateway's). Every component below it is opened
    relative to its parent with ``O_NOFOLLOW`` (a planted link fails), the file
    must be a regular file owned by ``owner`` (a hard link to someone else's file
    fails; None, for a directory of the gateway's own, takes any owner) and is opened
    non-blocking (a FIFO cannot hang the gateway). Returns "" when any check fails.

    With ``lines``: only the last ``lines`` whole lines of what was read (newline-joined,
    trailing blank lines dropped), reading up to 256 bytes a line (at most 1 MiB).
    """
    if lines is not None:
        if lines <= 0:
            return ""
        limit = min(max(limit, 256 * lines), 2**20)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fds = []
    try:
        fds.append(os.open(directory, flags | os.O_DIRECTORY))
        *dirs, name = relative.split("/")
        for part in dirs:
            fds.append(os.open(part, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open(name, flags, dir_fd=fds[-1])
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (owner is not None and info.st_uid != owner):
            return ""
        start = max(0, info.st_size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        text = os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        for fd in fds:
            os.close(fd)
    if lines is None:
        return text
    found = text.splitlines()
    if start and len(found) > 1:
        del found[0]  # it began mid-line
    while found and not found[-1].strip():
        found.pop()
    return "\n".join(found[-lines:])
