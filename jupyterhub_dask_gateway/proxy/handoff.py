"""Hand an accepted client socket from the proxy to a local scheduler (SCM_RIGHTS).

Once the proxy has peeked a ClientHello and chosen a cluster, copying every byte
through a Python process costs CPU that the client, scheduler and workers on the
same machine need: on a 2-core host a 200 MB gather ran at ~0.76x the speed of a
direct connection. A scheduler on the proxy's own host can take the socket
itself instead: the proxy passes the file descriptor over a unix socket, the
scheduler's TLS listener adopts it as if it had accepted it, and from then on
the bytes never touch the proxy (which may even restart without cutting them).

Both ends live here so the little protocol is in one place:

- the scheduler (our preload) runs :class:`HandoffReceiver` on a unix socket,
  by default in Linux's abstract namespace under a random name the gateway
  chose (``@jhdg-<hex>``: no path length limit, nothing to clean up), and
  serves only peers of the uids it was told (its own and the proxy's);
- the proxy only sends to the listener it expects: the kernel reports the
  listener's uid and pid (``SO_PEERCRED``), and both must be the cluster's
  account and the scheduler process the backend started. Abstract names are
  visible to every local account, so a name squatted by anyone else (another
  user who guessed or raced it) gets a connect and nothing more;
- the proxy calls :func:`hand_off`: connect, send one byte carrying the fd,
  read one byte of answer. ``b"K"``: the scheduler owns the connection now;
  ``b"E"`` or any failure before the fd went out: the proxy keeps the socket
  and splices it as usual. A receiver that took the fd always answers, so the
  only ambiguous case, a timeout after sending, is resolved by closing the
  proxy's copy and never by splicing (two readers on one socket would corrupt
  the stream).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from typing import NamedTuple

__all__ = [
    "HandedOff",
    "HandoffReceiver",
    "HandoffTarget",
    "hand_off",
    "pause_listener",
    "readable",
    "unix_address",
]

log = logging.getLogger("jupyterhub_dask_gateway.proxy")

_REQUEST = b"H"
_ACCEPTED = b"K"
_DECLINED = b"E"
# Longest address a sockaddr_un takes on Linux (108 bytes including the NUL).
MAX_PATH = 107


class HandoffTarget(NamedTuple):
    """Where the proxy may hand a connection: the socket, and who must be listening.

    ``uid`` None means the proxy's own uid, ``pid`` None any process of it.
    """

    path: str
    uid: int | None = None
    pid: int | None = None

    @classmethod
    def from_wire(cls, value) -> HandoffTarget | None:
        """``"@name"``, ``"/path"`` or ``{"path": ..., "uid": int, "pid": int}``; else None."""
        if isinstance(value, str):
            return cls(value) if value[:1] in ("/", "@") else None
        if not isinstance(value, dict):
            return None
        path, uid, pid = value.get("path"), value.get("uid"), value.get("pid")
        if not (isinstance(path, str) and path[:1] in ("/", "@")):
            return None
        for number in (uid, pid):
            if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
                return None
        return cls(path, uid, pid)


def unix_address(name: str) -> str:
    """``@name`` is an abstract socket (leading NUL), anything else a filesystem path."""
    return "\0" + name[1:] if name.startswith("@") else name


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


def pause_listener(listener: socket.socket, on_readable, delay: float = 1.0) -> None:
    """Stop watching a listener whose accept() failed (out of descriptors or memory).

    It stays readable, so watching it would spin; watching resumes after ``delay``
    unless the listener was closed meanwhile (what asyncio's own servers do).
    """
    loop = asyncio.get_running_loop()
    loop.remove_reader(listener.fileno())

    def resume():
        if listener.fileno() != -1:
            loop.add_reader(listener.fileno(), on_readable)

    loop.call_later(delay, resume)


class HandedOff(Exception):
    """The fd went out but no answer came back: the proxy must not use the socket."""


async def hand_off(
    path: str,
    sock: socket.socket,
    timeout: float = 10.0,
    *,
    uid: int | None = None,
    pid: int | None = None,
) -> bool:
    """Pass ``sock`` to the receiver at ``path``, if it is process ``pid`` of ``uid``.

    ``uid`` None means our own uid; ``pid`` None accepts any process of that uid.
    Returns True when the receiver took the connection (close your copy, do
    not shut it down), False when the caller still owns it (fall back to
    splicing). Raises :class:`HandedOff` when the outcome is unknown.
    """
    loop = asyncio.get_running_loop()
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.setblocking(False)
    sent = False
    try:
        await asyncio.wait_for(loop.sock_connect(channel, unix_address(path)), timeout)
        peer_pid, peer_uid, _ = peer_credentials(channel)
        expected_uid = os.getuid() if uid is None else uid
        if peer_uid != expected_uid or (pid is not None and peer_pid != pid):
            log.warning(
                "Not handing a connection to %s: its listener is pid %d of uid %d, "
                "expected %s of uid %d",
                path,
                peer_pid,
                peer_uid,
                "any process" if pid is None else f"pid {pid}",
                expected_uid,
            )
            return False
        # A fresh unix socket's buffer always has room for one byte: this does not block.
        socket.send_fds(channel, [_REQUEST], [sock.fileno()])
        sent = True
        answer = await asyncio.wait_for(loop.sock_recv(channel, 1), timeout)
    except (TimeoutError, OSError) as e:
        if sent and isinstance(e, asyncio.TimeoutError):
            raise HandedOff(f"no answer from {path} within {timeout} s") from None
        log.debug("Socket hand-off to %s failed (%s); splicing instead", path, e)
        return False
    finally:
        channel.close()
    return answer == _ACCEPTED


class HandoffReceiver:
    """Accept sockets passed by the proxy and give each to ``adopt(sock, peer)``.

    ``adopt`` must take ownership of the socket or raise (the connection is then
    left to the proxy). Only peers running as one of ``peer_uids`` (default: our
    own uid) are served.
    """

    def __init__(self, path: str, adopt, peer_uids=None):
        self.path = path
        self.adopt = adopt
        self.peer_uids = frozenset(peer_uids or {os.getuid()})
        self.abstract = path.startswith("@")
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_PATH:
            raise OSError(f"socket path too long for AF_UNIX: {self.path}")
        if not self.abstract:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                listener.bind(unix_address(self.path))
            finally:
                os.umask(old_umask)
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        asyncio.get_running_loop().remove_reader(listener.fileno())
        listener.close()
        if not self.abstract:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        for task in list(self._tasks):
            task.cancel()

    def _accept(self) -> None:
        try:
            channel, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("Hand-off socket accept failed: %s; pausing for 1 s", e)
            pause_listener(self._listener, self._accept)
            return
        channel.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._serve(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, channel: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, uid, _ = peer_credentials(channel)
            if uid not in self.peer_uids:
                log.warning("Refusing a socket hand-off from uid %d", uid)
                return
            await readable(channel, timeout=5)
            msg, fds, _flags, _addr = socket.recv_fds(channel, 1, 1)
            if msg != _REQUEST or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                return
            answer = self._adopt(fds[0])
            await loop.sock_sendall(channel, answer)
        except (TimeoutError, OSError) as e:
            log.debug("Hand-off channel failed: %s", e)
        finally:
            channel.close()

    def _adopt(self, fd: int) -> bytes:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return _DECLINED
        try:
            sock.setblocking(False)
            peer = sock.getpeername()
            self.adopt(sock, peer)
        except Exception as e:
            # Our copy goes; the proxy still holds its own and splices the connection.
            log.warning("Could not adopt a handed-off connection: %s", e)
            sock.close()
            return _DECLINED
        return _ACCEPTED


async def readable(sock: socket.socket, timeout: float | None = None) -> None:
    """Wait until ``sock`` is readable (data, EOF or an error), at most ``timeout`` s."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        # Synchronously, before the caller closes the socket and its fd number is reused.
        loop.remove_reader(fd)
