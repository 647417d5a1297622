"""The public TCP proxy: route TLS by SNI to schedulers, everything else to the gateway.

This module owns the data plane and the proxy's copy of the route table:

- :class:`TCPProxy` accepts connections, peeks the first bytes (``MSG_PEEK``,
  parsed by :func:`.sni.parse_sni`) under a handshake timeout, picks a target
  and splices bytes both ways without decrypting them: SNI
  ``daskgateway-<name>`` goes to that cluster's scheduler, plain HTTP (or TLS
  for any other name) goes to the gateway's HTTP port, anything malformed or
  for an unknown cluster is closed. A scheduler on this host that offers a
  hand-off socket gets the connection itself (:mod:`.handoff`), so its bytes
  skip the proxy.
- :class:`RouteSync` keeps the table in step with the gateway by long-polling
  ``GET {gateway_url}api/v1/routes?since=<version>``; while the gateway is
  away the last table stays in force, so established and new scheduler
  connections keep working.
- :func:`run_proxy` runs a proxy until SIGTERM/SIGINT (used by ``__main__``).

The gateway serves the routes endpoint and starts this module as its own
process (see ``__main__``); dashboards are proxied by :mod:`.dashboard`, not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..addresses import join_hostport, split_hostport
from .handoff import HandedOff, HandoffTarget, hand_off, pause_listener, readable
from .sni import INVALID, MAX_HELLO_SIZE, NEED_MORE, NOT_TLS, SNIResult, parse_sni
from .stats import HEADER as STATS_HEADER
from .stats import ProxyStats

__all__ = ["SNI_PREFIX", "RouteSync", "TCPProxy", "parse_host_port", "run_proxy"]

SNI_PREFIX = "daskgateway-"

log = logging.getLogger("jupyterhub_dask_gateway.proxy")


def parse_host_port(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6, an optional ``tls://``) or a pair → a pair.

    An empty host stays empty: a listener on every interface, as ``socket.bind`` reads it.
    """
    if isinstance(address, tuple):
        host, port = address
        return str(host), int(port)
    if not isinstance(address, str):
        raise ValueError(f"Invalid address {address!r}")
    rest = address.split("://", 1)[1] if "://" in address else address
    return split_hostport(rest, default_host="")


class _SharedBuffer:
    """One receive buffer reused by every connection of a proxy.

    A read is forwarded to the peer before the next read can happen (the event
    loop is single-threaded), so one buffer serves all connections and idle
    connections cost no user-space memory. The only subtlety is a transport
    that keeps a reference to data it could not send at once (newer asyncio
    queues memoryviews instead of copying): :meth:`forward` then gives that
    buffer away and allocates a fresh one.
    """

    def __init__(self, size: int):
        self.size = size
        self.view = memoryview(bytearray(size))

    def forward(self, nbytes: int, transport: asyncio.WriteTransport) -> None:
        if transport.get_write_buffer_size():
            # Already queueing: an exact-size copy avoids pinning a whole buffer per small read.
            transport.write(bytes(self.view[:nbytes]))
            return
        transport.write(self.view[:nbytes])
        if transport.get_write_buffer_size():
            self.view = memoryview(bytearray(self.size))


class _Half(asyncio.BufferedProtocol):
    """One socket of a spliced connection; whatever it reads goes to ``peer``.

    ``direction`` is where its reads count in the proxy's byte counters
    (``ProxyStats.IN`` for the client's socket, ``OUT`` for the target's).
    """

    def __init__(self, proxy: TCPProxy, direction: int):
        self.proxy = proxy
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.eof = False
        self.lost = False
        # Bytes read before the peer existed (see buffer_updated).
        self.early: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport
        # asyncio already disables Nagle on TCP transports; the limits decide when
        # backpressure kicks in (pause_writing below).
        transport.set_write_buffer_limits(high=self.proxy.high_water)
        self.proxy._halves.add(self)
        if self.peer is None:
            # The client side is wrapped before its target is connected; its bytes wait.
            transport.pause_reading()

    def get_buffer(self, sizehint):
        return self.proxy._buffer.view

    def buffer_updated(self, nbytes):
        self.proxy.stats.bytes[self.direction] += nbytes
        peer = self.peer
        if peer is None or peer.transport is None:
            # Before CPython 3.11.3 a pause_reading() made in connection_made is undone
            # when the transport starts reading right after, so bytes can arrive before
            # the upstream connection exists: keep them, and this time the pause holds.
            self.early.append(bytes(self.proxy._buffer.view[:nbytes]))
            self.transport.pause_reading()
            return
        self.proxy._buffer.forward(nbytes, peer.transport)

    def link(self, peer: _Half) -> None:
        """Start forwarding to ``peer``: what arrived early first, then resume reading."""
        self.peer = peer
        for chunk in self.early:
            peer.transport.write(chunk)
        self.early.clear()
        if self.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()
        else:
            self.transport.resume_reading()

    def pause_writing(self):
        # Our socket cannot take more: stop reading the side that feeds it.
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None:
            self.peer.transport.resume_reading()

    def eof_received(self):
        self.eof = True
        if self.peer is None:
            return True
        peer_transport = self.peer.transport
        if self.peer.eof:
            # Both directions are finished; close() still flushes what is queued.
            self.transport.close()
            peer_transport.close()
        elif peer_transport.can_write_eof():
            peer_transport.write_eof()
        # Keep our transport open: the other direction may still be flowing.
        return True

    def connection_lost(self, exc):
        self.lost = True
        self.proxy._halves.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def peek_hello(sock: socket.socket) -> SNIResult | None:
    """Peek (``MSG_PEEK``) until :func:`.sni.parse_sni` can decide; None on EOF mid-hello.

    The bytes stay in the kernel, so the connection can still be handed to a
    scheduler whole. ``SO_RCVLOWAT`` makes the socket readable only once the
    bytes the parser asked for are there (or at EOF), so a hello that trickles
    in costs one wake-up per step, not a busy loop.
    """
    needed = 1
    try:
        while True:
            await readable(sock)
            data = sock.recv(MAX_HELLO_SIZE, socket.MSG_PEEK)
            if len(data) < needed:
                return None  # readable below the low-water mark: the peer closed
            result = parse_sni(data)
            if result.status is not NEED_MORE:
                return result
            needed = result.needed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, needed)
    finally:
        if needed > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


class RouteSync:
    """Keep a route table in step with the gateway's ``api/v1/routes`` endpoint.

    The contract: ``GET {gateway_url}api/v1/routes[?since=<version>]`` with
    ``Authorization: token <token>`` answers ``{"version": int, "routes":
    {name: "host:port"}, "handoff": {name: {"path": "@socket", "uid": 1000, "pid": 42}},
    "http_handoff": "@socket"}`` (a hand-off may also be a bare socket name: any process
    of the proxy's own uid)
    (the full table; the hand-off keys are optional), holding the request while
    ``since`` is current. Errors keep the current table and retry with capped
    exponential backoff; after an error the next request omits ``since`` so a
    restarted gateway (whose versions start over) always sends its table.

    Parameters
    ----------
    gateway_url : str
        Base URL of the gateway's private HTTP API, e.g. ``http://127.0.0.1:8000/prefix/``.
    token : str
        The proxy token shared with the gateway.
    on_update : callable
        Called as ``on_update(version, routes, handoff, http_handoff)`` with each new table.
    poll_timeout : float
        Seconds to wait for one (long-poll) response before retrying.
    connect_timeout : float
        Seconds to wait for the TCP connection to the gateway.
    backoff_min, backoff_max : float
        Retry delays in seconds after an error (doubling from min to max).
    report : callable or None
        Returns the proxy's counters (``stats.ProxyStats.encode``), sent with every
        request in the ``X-Dask-Gateway-Proxy-Stats`` header.
    """

    def __init__(
        self,
        gateway_url: str,
        token: str,
        on_update,
        *,
        poll_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        report=None,
    ):
        self.url = gateway_url.rstrip("/") + "/api/v1/routes"
        self.report = report
        self.token = token
        self.on_update = on_update
        self.poll_timeout = poll_timeout
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.synced = asyncio.Event()
        self._client: AsyncHTTPClient | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            # Our own client: the shared per-loop instance has a small connection queue.
            self._client = AsyncHTTPClient(force_instance=True)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def fetch(self, since: int | None):
        """One request; returns ``(version, routes, handoff, http_handoff)`` or raises."""
        url = self.url if since is None else f"{self.url}?since={since}"
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        if self.report is not None:
            headers[STATS_HEADER] = self.report()
        response = await self._client.fetch(
            url,
            headers=headers,
            connect_timeout=self.connect_timeout,
            request_timeout=self.poll_timeout,
            follow_redirects=False,
        )
        return _parse_routes(response.body)

    async def _run(self) -> None:
        since = None
        delay = self.backoff_min
        outage_since = None
        while True:
            started = time.monotonic()
            try:
                version, *table = await self.fetch(since)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if outage_since is None:
                    outage_since = started
                    log.warning(
                        "Cannot sync routes from %s (%s); keeping the current table, retrying",
                        self.url,
                        _describe(e),
                        # Expected failures need no traceback; anything else is a bug to see.
                        exc_info=not isinstance(e, (OSError, HTTPClientError, ValueError)),
                    )
                since = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if outage_since is not None:
                log.info(
                    "Route sync with %s restored after %.1f s",
                    self.url,
                    time.monotonic() - outage_since,
                )
                outage_since = None
            delay = self.backoff_min
            unchanged = version == since
            self.on_update(version, *table)
            self.synced.set()
            since = version
            if unchanged and time.monotonic() - started < self.backoff_min:
                # A gateway that answers at once without a change would make us spin.
                await asyncio.sleep(self.backoff_min)


def _kind(what: str) -> str:
    """The connection kind of a target ``_choose`` described (``ProxyStats``' names)."""
    return "scheduler" if what.startswith("cluster") else "http"


def _describe(error: Exception) -> str:
    if isinstance(error, HTTPClientError) and error.code == 599:
        return str(error.__cause__ or error)
    return str(error) or type(error).__name__


def _parse_routes(body: bytes):
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"routes response is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("routes response is not a JSON object")
    version = data.get("version")
    routes = data.get("routes")
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(routes, dict):
        raise ValueError("routes response lacks an integer 'version' and a 'routes' object")
    table = {}
    for name, target in routes.items():
        try:
            table[name] = parse_host_port(target)
        except ValueError:
            log.warning("Ignoring route %r with invalid target %r", name, target)
    handoff = data.get("handoff")
    if not isinstance(handoff, dict):
        handoff = {}
    handoff = {n: t for n, t in ((n, HandoffTarget.from_wire(v)) for n, v in handoff.items()) if t}
    http_handoff = data.get("http_handoff")
    return version, table, handoff, http_handoff if _is_unix_address(http_handoff) else ""


def _is_unix_address(value) -> bool:
    return isinstance(value, str) and value[:1] in ("/", "@")


class TCPProxy:
    """The public TCP proxy, runnable in-process (``await start()`` / ``await stop()``).

    Parameters
    ----------
    listen : str or (host, port)
        Address to listen on; port 0 picks a free port (see :attr:`address`).
    gateway_url : str or None
        Base URL of the gateway's private HTTP API, the source of the route
        table. ``None`` disables syncing (tests set :attr:`routes` directly).
    http_target : str or (host, port) or None
        Where connections that are not TLS for a cluster go (the gateway's
        HTTP port); ``None`` closes them instead.
    token : str
        Proxy token for the routes endpoint. Never logged.
    handshake_timeout : float
        Seconds a new connection has to send a complete ClientHello (or its first byte).
    connect_timeout : float
        Seconds to connect to a scheduler or the HTTP target.
    poll_timeout : float
        Seconds one long-poll of the routes endpoint may take.
    chunk_size : int
        Bytes read per receive (one buffer shared by all connections).
    high_water : int
        Bytes queued towards a socket before reading from its peer pauses.
    """

    def __init__(
        self,
        listen: str | tuple[str, int],
        gateway_url: str | None,
        http_target: str | tuple[str, int] | None,
        token: str = "",
        *,
        handshake_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        poll_timeout: float = 60.0,
        chunk_size: int = 256 * 1024,
        high_water: int = 1024 * 1024,
    ):
        self.listen = parse_host_port(listen)
        self.http_target = parse_host_port(http_target) if http_target else None
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.high_water = high_water
        self.routes: dict[str, tuple[str, int]] = {}
        self.handoff: dict[str, HandoffTarget] = {}
        self.http_handoff = ""
        self.routes_version: int | None = None
        self.address: tuple[str, int] | None = None
        self._buffer = _SharedBuffer(chunk_size)
        # Counters the gateway exposes as metrics (sent with each route poll).
        self.stats = ProxyStats()
        self._halves: set[_Half] = set()
        self._tasks: set[asyncio.Task] = set()
        self._listener: socket.socket | None = None
        self._sync = (
            RouteSync(
                gateway_url,
                token,
                self.set_routes,
                poll_timeout=poll_timeout,
                report=self._report,
            )
            if gateway_url
            else None
        )

    def _report(self) -> str:
        spliced = sum(1 for half in self._halves if half.direction == ProxyStats.IN)
        return self.stats.encode(spliced)

    @property
    def synced(self) -> asyncio.Event | None:
        """Set once the first route table has arrived (``None`` without a gateway URL)."""
        return self._sync.synced if self._sync else None

    def set_routes(
        self,
        version: int | None,
        routes: dict[str, tuple[str, int]],
        handoff: dict[str, HandoffTarget | str] | None = None,
        http_handoff: str = "",
    ) -> None:
        """Replace the route table (logging what changed).

        ``handoff`` maps cluster names to the unix socket of a scheduler on this
        host that takes its connections itself, with the process that must be
        listening there (see :mod:`.handoff`);
        ``http_handoff`` is the same for the gateway's HTTP server.
        """
        if http_handoff != self.http_handoff:
            log.info("HTTP connections: %s", "socket hand-off" if http_handoff else "spliced")
            self.http_handoff = http_handoff
        handoff = {
            name: target if isinstance(target, HandoffTarget) else HandoffTarget(target)
            for name, target in (handoff or {}).items()
            if name in routes
        }
        for name in self.routes.keys() - routes.keys():
            log.info("Removed route for cluster %r", name)
        for name, target in routes.items():
            if self.routes.get(name) != target or self.handoff.get(name) != handoff.get(name):
                how = " (socket hand-off)" if name in handoff else ""
                log.info("Route for cluster %r -> %s:%d%s", name, *target, how)
        self.routes = dict(routes)
        self.handoff = handoff
        self.routes_version = version

    async def start(self) -> None:
        if self._listener is not None:
            return
        # Our own accept loop rather than loop.create_server: a transport would read the
        # ClientHello, and it must stay in the kernel so the socket can be handed off whole.
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=1024)
        listener.setblocking(False)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)
        log.info("Dask Gateway proxy listening on %s:%d", *self.address)
        if self._sync is not None:
            self._sync.start()

    async def stop(self) -> None:
        """Stop listening, drop every connection and stop syncing. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
            log.info("Dask Gateway proxy stopping (%d open sockets)", len(self._halves))
        if self._sync is not None:
            await self._sync.stop()
        for task in list(self._tasks):
            task.cancel()
        for half in list(self._halves):
            half.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self) -> None:
        # Drain the backlog: one wake-up may stand for many connections.
        for _ in range(64):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept() failed: %s; pausing accepts for 1 s", e)
                pause_listener(self._listener, self._accept)
                return
            sock.setblocking(False)
            self._spawn(self._route(sock, join_hostport(peer[0], peer[1])))

    async def _route(self, sock: socket.socket, peer: str) -> None:
        """Peek the hello, then hand the socket off, splice it, or close it."""
        try:
            target, what, receiver = await self._choose(sock, peer)
            outcome = "refused"  # what a None target means, unless handed off
            if receiver is not None:
                try:
                    taken = await hand_off(
                        receiver.path,
                        sock,
                        timeout=self.connect_timeout,
                        uid=receiver.uid,
                        pid=receiver.pid,
                    )
                    if taken:
                        outcome = f"{_kind(what)}_handoff"
                except HandedOff as e:
                    log.warning("Closing %s: hand-off to %s unclear: %s", peer, what, e)
                    taken = True
                    outcome = "failed"
                if taken:
                    log.debug("Handed %s to %s", peer, what)
                    # Only our descriptor closes; the scheduler holds the connection.
                    target = None
        except BaseException:
            # Cancelled (the proxy is stopping): the socket is still ours alone.
            sock.close()
            raise
        if target is None:
            self.stats.count(outcome)
            sock.close()
        else:
            await self._splice(sock, peer, target, what)

    async def _choose(self, sock: socket.socket, peer: str):
        """``(target, what, handoff)``; a None target means close the connection."""
        try:
            result = await asyncio.wait_for(peek_hello(sock), self.handshake_timeout)
        except TimeoutError:
            log.debug("Closing %s: no ClientHello within the handshake timeout", peer)
            return None, "", None
        except OSError as e:
            log.debug("Closing %s: %s", peer, e)
            return None, "", None
        if result is None or result.status is INVALID:
            log.debug("Closing %s: malformed or incomplete TLS ClientHello", peer)
            return None, "", None
        status, server_name = result
        if status is not NOT_TLS and server_name and server_name.startswith(SNI_PREFIX):
            cluster = server_name[len(SNI_PREFIX) :]
            target = self.routes.get(cluster)
            if target is None:
                log.info("Closing %s: no route for cluster %r", peer, cluster)
            return target, f"cluster {cluster!r}", self.handoff.get(cluster)
        if self.http_target is None:
            log.debug("Closing %s: not TLS for a cluster and no HTTP target", peer)
        http_handoff = HandoffTarget(self.http_handoff) if self.http_handoff else None
        return self.http_target, "the gateway", http_handoff

    async def _splice(self, sock: socket.socket, peer: str, target: tuple[str, int], what: str):
        loop = asyncio.get_running_loop()
        inbound = _Half(self, ProxyStats.IN)
        try:
            await loop.connect_accepted_socket(lambda: inbound, sock)
        except OSError as e:
            log.debug("Closing %s: %s", peer, e)
            self.stats.count("failed")
            return sock.close()
        upstream = _Half(self, ProxyStats.OUT)
        upstream.peer = inbound
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: upstream, *target), self.connect_timeout
            )
        except (TimeoutError, OSError) as e:
            log.warning(
                "Could not connect %s to %s at %s:%d: %s", peer, what, *target, e or "timed out"
            )
            self.stats.count("failed")
            inbound.transport.abort()
            return
        self.stats.count(_kind(what))
        if inbound.lost:
            upstream.transport.close()
            return
        log.debug("Connected %s to %s at %s:%d", peer, what, *target)
        inbound.link(upstream)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def run_proxy(
    listen: str | tuple[str, int],
    gateway_url: str | None,
    http_target: str | tuple[str, int] | None,
    token: str,
    *,
    pid_file: str | None = None,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    **kwargs,
) -> None:
    """Run a :class:`TCPProxy` until one of ``signals`` arrives, then shut it down.

    Writes ``pid_file`` once listening and removes it on the way out. Extra
    keyword arguments go to :class:`TCPProxy`.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    proxy = TCPProxy(listen, gateway_url, http_target, token, **kwargs)
    try:
        await proxy.start()
        if pid_file:
            _write_pid_file(pid_file)
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await proxy.stop()
        if pid_file:
            _remove_pid_file(pid_file)


def _write_pid_file(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    # Atomic, so a gateway reading it never sees a half-written pid.
    os.replace(tmp, path)


def _remove_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            mine = f.read().strip() == str(os.getpid())
        if mine:
            os.unlink(path)
    except OSError:
        pass
