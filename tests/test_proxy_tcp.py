"""Tests of the public TCP proxy (``python -m jupyterhub_dask_gateway.proxy``).

The proxy always runs as a real subprocess. In the test process: a small
tornado app standing in for the gateway (HTTP API plus the ``api/v1/routes``
long-poll), TLS echo servers, raw TCP sinks and a real TLS dask scheduler and
worker reached with the unmodified dask-gateway client comm.
"""

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import sys
import time

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyterhub_dask_gateway.tls import new_keypair

TOKEN = "s3cret-proxy-token-0123456789"


# ---------------------------------------------------------------- helpers


async def wait_for(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Poll an (async) predicate until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def client_hello(server_hostname):
    """The first bytes a Python TLS client sends (its ClientHello)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_hostname
    )
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def read_until_closed(reader, timeout=10.0):
    """Read until EOF or reset; returns the bytes read. Fails if the peer stays open."""
    data = bytearray()

    async def drain():
        while chunk := await reader.read(65536):
            data.extend(chunk)

    try:
        await asyncio.wait_for(drain(), timeout)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return bytes(data)


async def close_writer(writer):
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass


class FakeGateway:
    """The gateway side of the routes contract plus a tiny HTTP API, in-process."""

    def __init__(self, port=0, version=1, routes=None, hold=2.0):
        self.version = version
        self.routes = dict(routes or {})
        self.handoff = {}
        self.http_handoff = ""
        self.hold = hold
        self.route_requests = []
        self._changed = asyncio.Event()
        app = web.Application(
            [
                (r"/prefix/api/v1/routes", _RoutesHandler, {"gateway": self}),
                (r"/prefix/hello", _HelloHandler),
                (r"/prefix/echo", _HelloHandler),
                (r"/prefix/peer", _PeerHandler),
            ]
        )
        self.server = HTTPServer(app)
        [sock] = bind_sockets(port, "127.0.0.1")
        self.port = sock.getsockname()[1]
        self.server.add_sockets([sock])

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/prefix/"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def set_routes(self, routes, handoff=None, http_handoff=""):
        self.routes = dict(routes)
        self.handoff = dict(handoff or {})
        self.http_handoff = http_handoff
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self):
        await self._changed.wait()

    async def stop(self):
        self.server.stop()
        # Wake held long-polls so their handlers end; their connections are going away.
        self._changed.set()
        await self.server.close_all_connections()


class _RoutesHandler(web.RequestHandler):
    def initialize(self, gateway):
        self.gateway = gateway

    async def get(self):
        gw = self.gateway
        if self.request.headers.get("Authorization") != f"token {TOKEN}":
            self.set_header("WWW-Authenticate", "token")
            raise web.HTTPError(401)
        since = self.get_argument("since", None)
        gw.route_requests.append(since)
        if since is not None and int(since) == gw.version:
            try:
                await asyncio.wait_for(gw.wait_changed(), gw.hold)
            except TimeoutError:
                pass
        if self.request.connection.stream.closed():
            return
        self.write(
            {
                "version": gw.version,
                "routes": gw.routes,
                "handoff": gw.handoff,
                "http_handoff": gw.http_handoff,
            }
        )


class _HelloHandler(web.RequestHandler):
    def get(self):
        self.write("hello from the gateway")

    def post(self):
        self.write(hashlib.sha256(self.request.body).hexdigest())


class _PeerHandler(web.RequestHandler):
    def get(self):
        # The port of the socket this request arrived on, as the server sees it.
        self.write(str(self.request.connection.stream.socket.getpeername()[1]))


class ProxyProcess:
    """A running ``python -m jupyterhub_dask_gateway.proxy`` and its log file."""

    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.port = None

    def log(self):
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, pattern, timeout=15.0):
        def match():
            if self.proc.returncode is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            return re.search(pattern, self.log())

        return await wait_for(match, timeout, what=f"log line {pattern!r}")

    async def terminate(self, timeout=10.0):
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def cluster_tls(tmp_path):
    """A cluster key pair: PEM strings plus files, and server/client SSL contexts."""
    cert, key = new_keypair("test-cluster")  # the gateway's own per-cluster key pair
    key_file, cert_file = tmp_path / "dask.pem", tmp_path / "dask.crt"
    key_file.write_text(key)
    cert_file.write_text(cert)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_file))
    client_ctx.check_hostname = False
    return {
        "key": key,
        "cert": cert,
        "key_file": str(key_file),
        "cert_file": str(cert_file),
        "server_ctx": server_ctx,
        "client_ctx": client_ctx,
    }


@pytest.fixture
async def tls_echo(cluster_tls):
    """A TLS echo server (the cluster certificate); records the SNI each client sent."""
    seen = []
    ctx = cluster_tls["server_ctx"]
    ctx.sni_callback = lambda sslobj, name, ctx: seen.append(name)

    async def echo(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
    server.seen_sni = seen
    server.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield server
    server.close()


@pytest.fixture
async def gateway():
    """The stand-in gateway (routes long-poll holds 2 s); stopped at teardown."""
    gw = FakeGateway()
    yield gw
    await gw.stop()


@pytest.fixture
async def start_proxy(tmp_path):
    """Start proxy subprocesses (``await start_proxy(gateway, *args)``); SIGTERMed at teardown."""
    started = []

    async def start(gateway_url, http_target=None, *args, env=None):
        log_path = tmp_path / f"proxy-{len(started)}.log"
        cmd = [sys.executable, "-m", "jupyterhub_dask_gateway.proxy", "--listen", "127.0.0.1:0"]
        cmd += ["--gateway-url", gateway_url]
        if http_target:
            cmd += ["--http-target", http_target]
        with open(log_path, "wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                *args,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "JHDG_PROXY_TOKEN": TOKEN, **(env or {})},
            )
        proxy = ProxyProcess(proc, log_path)
        started.append(proxy)
        match = await proxy.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)")
        proxy.port = int(match.group(1))
        return proxy

    yield start
    for proxy in started:
        await proxy.terminate()


async def tls_roundtrip(port, cluster, ctx, payload=b"ping"):
    """Connect through the proxy with SNI daskgateway-<cluster>, echo one payload."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=f"daskgateway-{cluster}"
    )
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        await close_writer(writer)


async def tls_works(port, cluster, ctx):
    try:
        return await tls_roundtrip(port, cluster, ctx) == b"ping"
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return False


async def is_closed_by_proxy(port, first_bytes, timeout=10.0):
    """True if the proxy closes the connection without an answer from any target."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first_bytes)
        # Any answer means the bytes were relayed (e.g. a ServerHello from a TLS target).
        return await asyncio.wait_for(reader.read(65536), timeout) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        await close_writer(writer)


async def http_get(port, path="/prefix/hello"):
    client = AsyncHTTPClient()
    response = await client.fetch(f"http://127.0.0.1:{port}{path}", request_timeout=10)
    return response.body.decode()


# ---------------------------------------------------------------- tests


async def test_routes_tls_by_sni_and_http_to_gateway(gateway, tls_echo, cluster_tls, start_proxy):
    gateway.set_routes({"echo": tls_echo.address})
    proxy = await start_proxy(gateway.url, gateway.address)
    ctx = cluster_tls["client_ctx"]
    await proxy.wait_for_log(r"Route for cluster 'echo' -> 127\.0\.0\.1:\d+")

    # TLS is end-to-end: the echo server itself saw the SNI and served its certificate.
    payload = os.urandom(300_000)
    assert await tls_roundtrip(proxy.port, "echo", ctx, payload) == payload
    assert tls_echo.seen_sni[-1] == "daskgateway-echo"

    # Plain HTTP (and a larger request body) reaches the gateway's HTTP port.
    assert await http_get(proxy.port) == "hello from the gateway"
    body = os.urandom(2_000_000)
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{proxy.port}/prefix/echo",
        method="POST",
        body=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.body.decode() == hashlib.sha256(body).hexdigest()

    # The first sync had no ``since``; later ones long-poll from the version it got.
    assert gateway.route_requests[0] is None
    await wait_for(lambda: str(gateway.version) in gateway.route_requests, what="long-poll")

    # The token travels only in the Authorization header and is never logged.
    assert TOKEN not in proxy.log()


async def test_unknown_cluster_and_malformed_hellos_are_closed(
    gateway, tls_echo, cluster_tls, start_proxy
):
    gateway.set_routes({"echo": tls_echo.address})
    proxy = await start_proxy(gateway.url, gateway.address)
    await proxy.wait_for_log(r"Route for cluster 'echo'")

    assert await is_closed_by_proxy(proxy.port, client_hello("daskgateway-nope"))
    await proxy.wait_for_log(r"no route for cluster 'nope'")
    # Oversized record, zero-length record, a hello whose lengths lie.
    hello = bytearray(client_hello("daskgateway-echo"))
    hello[8] ^= 0x40
    for garbage in (b"\x16\x03\x01\xff\xff", b"\x16\x03\x01\x00\x00", bytes(hello)):
        assert await is_closed_by_proxy(proxy.port, garbage)

    # A truncated hello followed by EOF is closed without waiting for the timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(client_hello("daskgateway-echo")[:40])
    writer.write_eof()
    assert await read_until_closed(reader, timeout=5) == b""
    await close_writer(writer)

    # Binary junk that is not TLS goes to the HTTP port, which rejects it as HTTP.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"\x00\x01\x02garbage\r\n\r\n")
    assert b"400" in (await read_until_closed(reader))[:20]
    await close_writer(writer)

    # The proxy is still fine.
    assert await tls_works(proxy.port, "echo", cluster_tls["client_ctx"])
    assert await http_get(proxy.port) == "hello from the gateway"


async def test_tls_for_other_names_goes_to_http_target(gateway, start_proxy):
    """TLS without a daskgateway- name is handed, peeked bytes included, to the HTTP target."""
    received = asyncio.get_running_loop().create_future()

    async def recorder(reader, writer):
        data = b""
        while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        if not received.done():
            received.set_result(data)
        writer.close()

    server = await asyncio.start_server(recorder, "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        proxy = await start_proxy(gateway.url, target)
        hello = client_hello("www.example.org")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        # Sent in two pieces, so the proxy has to keep peeking.
        writer.write(hello[:7])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(hello[7:])
        assert await asyncio.wait_for(received, 10) == hello
        await close_writer(writer)
    finally:
        server.close()


async def test_slowloris_is_cut_off_and_others_keep_working(
    gateway, tls_echo, cluster_tls, start_proxy
):
    gateway.set_routes({"echo": tls_echo.address})
    proxy = await start_proxy(gateway.url, gateway.address, "--handshake-timeout", "2.5")
    await proxy.wait_for_log(r"Route for cluster 'echo'")
    hello = client_hello("daskgateway-echo")

    slow = []
    for i in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        # Half of them send part of a hello, the rest nothing at all.
        if i % 2:
            writer.write(hello[: 5 + i])
        slow.append((reader, writer))
    started = time.monotonic()

    # Meanwhile everybody else is served at once.
    assert await tls_roundtrip(proxy.port, "echo", cluster_tls["client_ctx"]) == b"ping"
    assert await http_get(proxy.port) == "hello from the gateway"
    assert time.monotonic() - started < 2.5

    for reader, writer in slow:
        assert await read_until_closed(reader, timeout=10) == b""
        await close_writer(writer)
    elapsed = time.monotonic() - started
    assert 2.0 < elapsed < 12
    assert await tls_roundtrip(proxy.port, "echo", cluster_tls["client_ctx"]) == b"ping"


async def test_route_updates_arrive_by_long_poll(gateway, tls_echo, cluster_tls, start_proxy):
    proxy = await start_proxy(gateway.url, gateway.address)
    ctx = cluster_tls["client_ctx"]
    await wait_for(lambda: gateway.route_requests, what="first sync")
    assert not await tls_works(proxy.port, "late", ctx)

    # Held long-polls are answered as soon as the table changes (hold is 2 s).
    changed = time.monotonic()
    gateway.set_routes({"late": tls_echo.address})
    await wait_for(lambda: tls_works(proxy.port, "late", ctx), what="new route")
    assert time.monotonic() - changed < 1.5

    gateway.set_routes({})
    await wait_for(
        lambda: is_closed_by_proxy(proxy.port, client_hello("daskgateway-late")),
        what="route removal",
    )
    await proxy.wait_for_log(r"Removed route for cluster 'late'")


async def test_survives_gateway_outage_and_resyncs(gateway, tls_echo, cluster_tls, start_proxy):
    gateway.version = 41
    gateway.set_routes({"echo": tls_echo.address})
    proxy = await start_proxy(gateway.url, gateway.address)
    ctx = cluster_tls["client_ctx"]
    await proxy.wait_for_log(r"Route for cluster 'echo'")

    # An established, spliced connection.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.port, ssl=ctx, server_hostname="daskgateway-echo"
    )

    async def exchange(payload):
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)

    assert await exchange(b"before") == b"before"

    port = gateway.port
    await gateway.stop()
    await proxy.wait_for_log(r"Cannot sync routes")
    # The spliced connection, new scheduler connections and the table survive.
    assert await exchange(b"during" * 1000) == b"during" * 1000
    assert await tls_works(proxy.port, "echo", ctx)
    # HTTP has nowhere to go now: the client is closed, not hung.
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer2.write(b"GET /prefix/hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await read_until_closed(reader2) == b""
    await close_writer(writer2)

    # A "restarted" gateway on the same port, with versions starting over.
    second = FakeGateway(port=port, version=1, routes={"echo2": tls_echo.address})
    try:
        await wait_for(lambda: tls_works(proxy.port, "echo2", ctx), what="resync")
        await proxy.wait_for_log(r"Route sync with .* restored")
        assert not await tls_works(proxy.port, "echo", ctx)
        assert await exchange(b"after") == b"after"
        assert await http_get(proxy.port) == "hello from the gateway"
        # One warning per outage, however many retries it took.
        assert proxy.log().count("Cannot sync routes") == 1
        assert TOKEN not in proxy.log()
    finally:
        await close_writer(writer)
        await second.stop()


async def test_bulk_transfer_with_half_close(gateway, start_proxy):
    """100 MB each way through an SNI route, with EOF propagated in one direction first."""
    size = 100 * 2**20
    received = {}

    async def sink(reader, writer):
        # Receive until the client half-closes, then answer with a digest and 100 MB.
        digest = hashlib.sha256()
        total = 0
        while chunk := await reader.read(2**20):
            digest.update(chunk)
            total += len(chunk)
        received.update(total=total, digest=digest.hexdigest())
        writer.write(json.dumps(received).encode() + b"\n")
        block = b"z" * 2**20
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    gateway.set_routes({"bulk": f"127.0.0.1:{server.sockets[0].getsockname()[1]}"})
    try:
        proxy = await start_proxy(gateway.url, gateway.address)
        await proxy.wait_for_log(r"Route for cluster 'bulk'")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        # A real hello routes the connection; what follows need not be TLS at all.
        hello = client_hello("daskgateway-bulk")
        block = os.urandom(2**20)
        expected = hashlib.sha256(hello)
        started = time.monotonic()
        writer.write(hello)
        for _ in range(size // len(block)):
            writer.write(block)
            expected.update(block)
            await writer.drain()
        writer.write_eof()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 60))
        assert answer == {"total": size + len(hello), "digest": expected.hexdigest()}
        total = len(await read_until_closed(reader, timeout=60))
        elapsed = time.monotonic() - started
        assert total == size
        print(f"2 x 100 MB through the proxy in {elapsed:.2f} s ({200 / elapsed:.0f} MB/s)")
        await close_writer(writer)
    finally:
        server.close()


def tls_security(cluster_tls):
    from distributed.security import Security

    key_file, cert_file = cluster_tls["key_file"], cluster_tls["cert_file"]
    return Security(
        tls_ca_file=cert_file,
        tls_scheduler_cert=cert_file,
        tls_scheduler_key=key_file,
        tls_worker_cert=cert_file,
        tls_worker_key=key_file,
        require_encryption=True,
    )


async def test_dask_computation_through_proxy(gateway, cluster_tls, start_proxy):
    """The unmodified dask-gateway client comm, TLS end-to-end to a real scheduler."""
    import dask_gateway  # noqa: F401  (registers the gateway:// comm)
    from dask_gateway.client import GatewaySecurity
    from distributed import Client, Scheduler, Worker

    security = tls_security(cluster_tls)
    async with (
        Scheduler(
            protocol="tls",
            host="127.0.0.1",
            port=0,
            dashboard=False,
            # The scheduler's HTTP server (health, metrics) runs even without a dashboard.
            dashboard_address="127.0.0.1:0",
            security=security,
        ) as scheduler,
        Worker(
            scheduler.address,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            security=security,
            nthreads=2,
        ) as worker,
    ):
        gateway.set_routes({"dask-1": scheduler.address.removeprefix("tls://")})
        proxy = await start_proxy(gateway.url, gateway.address)
        await proxy.wait_for_log(r"Route for cluster 'dask-1'")
        client_security = GatewaySecurity(tls_key=cluster_tls["key"], tls_cert=cluster_tls["cert"])
        async with Client(
            f"gateway://127.0.0.1:{proxy.port}/dask-1",
            security=client_security,
            asynchronous=True,
        ) as client:
            assert await client.submit(sum, range(1000)) == 499500
            # A few MB back through the scheduler and the proxy.
            future = client.submit(os.urandom, 8 * 2**20, pure=False)
            data = await client.gather(future, direct=False)
            assert len(data) == 8 * 2**20
            # An ordinary rpc over the same proxied comm.
            identity = await client.scheduler.identity()
            assert worker.address in identity["workers"]


async def test_local_scheduler_takes_handed_off_connections(gateway, cluster_tls, start_proxy):
    """With a hand-off socket the scheduler gets the client's socket itself: no byte of
    the connection passes through the proxy, so it even outlives the proxy process."""
    import dask_gateway  # noqa: F401  (registers the gateway:// comm)
    from dask_gateway.client import GatewaySecurity
    from distributed import Client, Scheduler, Worker

    from jupyterhub_dask_gateway.proxy.handoff import HandoffReceiver
    from jupyterhub_dask_gateway.scheduler_preload import listener_adopter

    security = tls_security(cluster_tls)
    async with (
        Scheduler(
            protocol="tls",
            host="127.0.0.1",
            port=0,
            dashboard_address="127.0.0.1:0",
            security=security,
        ) as scheduler,
        Worker(scheduler.address, host="127.0.0.1", security=security, nthreads=1),
    ):
        adopt = listener_adopter(scheduler)
        assert adopt is not None, "tornado's TCPServer lost _handle_connection"
        adopted = []
        socket_name = f"@jhdg-test-{os.urandom(8).hex()}"
        receiver = HandoffReceiver(
            socket_name, lambda sock, peer: (adopted.append(peer), adopt(sock, peer))
        )
        receiver.start()
        try:
            gateway.set_routes(
                {"dask-1": scheduler.address.removeprefix("tls://")}, {"dask-1": socket_name}
            )
            proxy = await start_proxy(gateway.url, gateway.address)
            await proxy.wait_for_log(r"Route for cluster 'dask-1' .*\(socket hand-off\)")
            async with Client(
                f"gateway://127.0.0.1:{proxy.port}/dask-1",
                security=GatewaySecurity(tls_key=cluster_tls["key"], tls_cert=cluster_tls["cert"]),
                asynchronous=True,
            ) as client:
                assert await client.submit(sum, range(1000)) == 499500
                assert adopted, "no connection was handed to the scheduler"
                # The scheduler's end of the client's comm faces the client's own socket,
                # not an outbound socket of the proxy.
                client_end = client.scheduler_comm.comm.local_address
                scheduler_peer = scheduler.client_comms[client.id].comm.peer_address
                assert client_end.rsplit(":", 1)[1] == scheduler_peer.rsplit(":", 1)[1]
                assert await proxy.terminate() == 0
                data = await client.gather(client.submit(os.urandom, 4 * 2**20, pure=False))
                assert len(data) == 4 * 2**20
        finally:
            receiver.stop()


async def test_hand_off_falls_back_to_splicing(gateway, tls_echo, cluster_tls, start_proxy):
    """A hand-off socket nobody listens on, or a receiver that declines: the proxy splices."""
    from jupyterhub_dask_gateway.proxy.handoff import HandoffReceiver

    declined = []

    def decline(sock, peer):
        declined.append(peer)
        raise RuntimeError("not today")

    socket_name = f"@jhdg-test-{os.urandom(8).hex()}"
    receiver = HandoffReceiver(socket_name, decline)
    receiver.start()
    try:
        gateway.set_routes(
            {"gone": tls_echo.address, "declines": tls_echo.address},
            {"gone": f"@jhdg-test-nobody-{os.urandom(8).hex()}", "declines": socket_name},
        )
        proxy = await start_proxy(gateway.url)
        await proxy.wait_for_log(r"Route for cluster 'declines'")
        assert await tls_works(proxy.port, "gone", cluster_tls["client_ctx"])
        assert await tls_works(proxy.port, "declines", cluster_tls["client_ctx"])
        assert len(declined) == 1
        assert tls_echo.seen_sni.count("daskgateway-declines") == 1
    finally:
        receiver.stop()


async def test_http_connections_are_handed_to_the_gateway(gateway, start_proxy):
    """With ``http_handoff`` the gateway's HTTP server gets the client's socket itself."""
    from jupyterhub_dask_gateway.proxy.handoff import HandoffReceiver

    receiver = HandoffReceiver(
        f"@jhdg-test-{os.urandom(8).hex()}", gateway.server._handle_connection
    )
    receiver.start()
    try:
        proxy = await start_proxy(gateway.url, gateway.address)

        async def peer_port_seen_by_gateway():
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                writer.write(b"GET /prefix/peer HTTP/1.0\r\nHost: x\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 10)
                ours = writer.get_extra_info("sockname")[1]
                return ours, int(response.rsplit(b"\r\n\r\n", 1)[1])
            finally:
                await close_writer(writer)

        ours, seen = await peer_port_seen_by_gateway()
        assert seen != ours  # spliced: the gateway sees the proxy's own socket
        gateway.set_routes({}, http_handoff=receiver.path)
        await proxy.wait_for_log(r"HTTP connections: socket hand-off")
        ours, seen = await peer_port_seen_by_gateway()
        assert seen == ours
    finally:
        receiver.stop()


async def test_descriptor_exhaustion_pauses_accepts(gateway, tmp_path):
    """Out of file descriptors, the proxy pauses accepting (no busy loop) and recovers."""
    import resource

    import psutil

    def small_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "jupyterhub_dask_gateway.proxy", "--listen", "127.0.0.1:0"],
            *["--gateway-url", gateway.url, "--http-target", gateway.address],
            *["--handshake-timeout", "60"],
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "JHDG_PROXY_TOKEN": TOKEN},
            preexec_fn=small_fd_limit,
        )
    proxy = ProxyProcess(proc, log_path)
    idle = []
    try:
        port = int((await proxy.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)")).group(1))
        # Silent connections hold a descriptor each until the handshake timeout.
        for _ in range(60):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        await proxy.wait_for_log(r"accept\(\) failed: .*pausing accepts")
        assert psutil.Process(proc.pid).cpu_percent(interval=1.0) < 50
        for _, writer in idle:
            writer.close()
        idle.clear()

        async def serves_again():
            try:
                return await http_get(port) == "hello from the gateway"
            except Exception:  # reset, closed stream or a 599 while the proxy recovers
                return False

        await wait_for(serves_again, what="the proxy serving again")
    finally:
        for _, writer in idle:
            writer.close()
        await proxy.terminate()


async def test_sigterm_exits_cleanly_and_removes_pid_file(
    gateway, tls_echo, cluster_tls, tmp_path, start_proxy
):
    pid_file = tmp_path / "proxy.pid"
    gateway.set_routes({"echo": tls_echo.address})
    proxy = await start_proxy(gateway.url, gateway.address, "--pid-file", str(pid_file))
    await wait_for(pid_file.exists, what="pid file")
    assert pid_file.read_text().strip() == str(proxy.proc.pid)
    await proxy.wait_for_log(r"Route for cluster 'echo'")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.port, ssl=cluster_tls["client_ctx"], server_hostname="daskgateway-echo"
    )
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"

    assert await proxy.terminate() == 0
    assert not pid_file.exists()
    # Open connections were closed, and nobody listens any more.
    assert await read_until_closed(reader, timeout=5) == b""
    await close_writer(writer)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_missing_token_is_an_error(gateway, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JHDG_PROXY_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jupyterhub_dask_gateway.proxy",
        "--listen",
        "127.0.0.1:0",
        "--gateway-url",
        gateway.url,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"JHDG_PROXY_TOKEN" in stderr


async def test_in_process_api(tls_echo, cluster_tls):
    """``TCPProxy`` runs in-process too (no gateway: the table is set directly)."""
    from jupyterhub_dask_gateway.proxy import TCPProxy
    from jupyterhub_dask_gateway.proxy.tcp import parse_host_port

    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    proxy = TCPProxy("127.0.0.1:0", None, None, handshake_timeout=5)
    proxy.set_routes(
        1,
        {
            "echo": parse_host_port(tls_echo.address),
            "dead": parse_host_port(f"tls://127.0.0.1:{unused.getsockname()[1]}"),
        },
    )
    await proxy.start()
    await proxy.start()
    try:
        port = proxy.address[1]
        assert await tls_works(port, "echo", cluster_tls["client_ctx"])
        # A scheduler that is gone, and plain HTTP without an HTTP target: both closed.
        assert await is_closed_by_proxy(port, client_hello("daskgateway-dead"))
        assert await is_closed_by_proxy(port, b"GET / HTTP/1.0\r\n\r\n")
    finally:
        await proxy.stop()
        await proxy.stop()
        unused.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
