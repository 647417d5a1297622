"""Private files: the one way the gateway (and a job's user) writes a secret to disk.

Keys, tokens, a cluster's key pair and a job's environment file are written with
``write_private``: mode 0600 set on the descriptor (whatever the umask), ``O_NOFOLLOW``
(a link planted at the name fails the write instead of redirecting it) and
``O_CLOEXEC``, the owner set before the first byte, and, where asked, a fresh file
(``O_EXCL``), an atomic replacement or an ``fsync``. Reading what users' processes
wrote is the other direction, and ``accounts.read_tail_as_root``'s.

Standard library only: ``backends/staging.py`` imports it while running as a job's
user (``python -I``), where starting fast matters.
"""

from __future__ import annotations

import os

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(
    path: str,
    data: bytes | str,
    *,
    exclusive: bool = False,
    replace: bool = False,
    dir_fd: int | None = None,
    owner: tuple[int, int] | None = None,
    durable: bool = False,
) -> None:
    """Write ``data`` (str: UTF-8) to ``path`` as a file only its owner may read (0600).

    Parameters
    ----------
    path : str
        The file; relative to ``dir_fd`` when that is given. A link at the last
        component is never followed (``OSError``, ``ELOOP``); the directories on the way
        are the caller's to trust (or to open with ``O_NOFOLLOW`` and pass as ``dir_fd``).
    exclusive : bool
        The file must not exist yet (``O_EXCL``, ``FileExistsError`` otherwise): for a
        fresh file in a directory someone else could have written to.
    replace : bool
        Write a fresh temporary file next to ``path`` and rename it over ``path``, so a
        reader sees the old content or the new, never part of it (and a link at
        ``path`` is replaced, not followed). Without ``exclusive`` or ``replace`` an
        existing regular file is truncated and rewritten.
    dir_fd : int, optional
        A directory descriptor ``path`` is relative to.
    owner : (uid, gid), optional
        Hand the file to this account (root writing a file for a user) before any byte
        of ``data`` is in it.
    durable : bool
        ``fsync`` the file and its directory before returning: for what must survive a
        crash (the database encryption key). Off by default: most of these files are
        rewritten at the next start anyway.

    A file this call created is removed again if writing it fails.
    """
    if isinstance(data, str):
        data = data.encode()
    if not replace:
        flags = _FLAGS | (os.O_EXCL if exclusive else os.O_TRUNC)
        _write_new(path, data, flags, dir_fd, owner, durable)
    else:
        tmp = f"{path}.tmp{os.getpid()}"
        _write_new(tmp, data, _FLAGS | os.O_EXCL, dir_fd, owner, durable)
        try:
            os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink(tmp, dir_fd)
            raise
    if durable:
        _fsync_dir(os.path.dirname(path) or ".", dir_fd)


def _write_new(path, data, flags, dir_fd, owner, durable) -> None:
    fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
    created = bool(flags & os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600)
            if owner is not None:
                os.fchown(fd, *owner)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(fd)
    except BaseException:
        if created:
            _unlink(path, dir_fd)
        raise


def _unlink(path, dir_fd) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass


def _fsync_dir(path, dir_fd) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
