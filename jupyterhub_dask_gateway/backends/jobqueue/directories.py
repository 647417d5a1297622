"""What root creates of a staging directory for a job's user, and nothing more.

In multi-user mode (root with a ``submit_wrapper``) a staging directory may lie below
directories root owns (``/srv/dask/staging/<cluster>``) or in the user's home. Root
creates only what lies in root's own directories, walking with ``O_NOFOLLOW`` so no
planted link redirects it, and hands the staging directory over; everything inside a
directory of the user's is the user's to create, as the user (``backends/staging.py``).
Blocking: called through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os


def make_staging_dirs(path: str, account) -> None:
    """Create what of ``path`` root may create for ``account`` (a ``pwd`` entry).

    The walk opens every existing component with ``O_NOFOLLOW`` (a link anywhere
    fails) and stops at the first directory the user owns: the user creates the rest.
    A component owned by anyone else but root or the user fails (``OSError``). New
    parents are 0711 (passable, not listable); the staging directory itself is created
    0700 and handed to the user.
    """
    parts = [p for p in os.path.normpath(path).split(os.sep) if p]
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            owner = os.fstat(fd).st_uid
            if owner == account.pw_uid:
                return  # the user's own directory: the rest is theirs to create
            if owner != 0:
                raise OSError(f"{os.sep.join(parts[:i]) or '/'} belongs to uid {owner}")
            try:
                os.mkdir(part, 0o700 if last else 0o711, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            if created and last:
                os.fchown(fd, account.pw_uid, account.pw_gid)
        info = os.fstat(fd)
        if info.st_uid not in (0, account.pw_uid):
            raise OSError(f"{path} belongs to uid {info.st_uid}")
        if info.st_uid == 0:
            os.fchown(fd, account.pw_uid, account.pw_gid)
    finally:
        os.close(fd)
