"""Tests of the dashboard reverse proxy (``jupyterhub_dask_gateway.proxy.dashboard``).

A real in-process dask scheduler serves its Bokeh dashboard; a small tornado
app mounts a subclass of ``DashboardProxyHandler`` at the route the gateway
uses. A second, tiny upstream app makes the HTTP and websocket details
(headers, redirects, methods, close codes) observable.
"""

import asyncio
import json
import re
import socket
import time

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketHandler, websocket_connect

from jupyterhub_dask_gateway.proxy.dashboard import DashboardProxyHandler

ROUTE = r"/services/dask-gateway/clusters/(?P<cluster_name>[^/]+)(?P<path>/.*)?"
BASE = "/services/dask-gateway/clusters"


def start_server(app):
    [sock] = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets([sock])
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def closed_port():
    """A port nobody listens on (bound, never listening, so nobody else gets it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# ---------------------------------------------------------------- a tiny upstream


class _EchoRequest(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def _reply(self):
        self.set_cookie("upstream", "nope")
        self.set_header("X-Upstream", "yes")
        self.write(
            {
                "method": self.request.method,
                "uri": self.request.uri,
                "headers": {k.lower(): v for k, v in self.request.headers.get_all()},
                "body": self.request.body.decode(errors="replace"),
            }
        )

    get = post = delete = patch = put = options = _reply

    def head(self):
        self.set_header("Content-Length", "1234")


class _Redirect(web.RequestHandler):
    def get(self, kind):
        target = {
            "absolute-path": "/status?x=1",
            "relative": "status",
            "own-url": self.request.protocol + "://" + self.request.host + "/workers#top",
            "foreign": "https://example.org/elsewhere",
            "scheme-relative": "//example.org/elsewhere",
            "climbing": "../../../../hub/api/users",
            "climbing-absolute": "/../../hub/api",
        }[kind]
        self.redirect(target, status=302)


class _Status(web.RequestHandler):
    def get(self, code):
        self.set_status(int(code))
        if int(code) not in (204, 304):
            self.write({"code": int(code)})


class _EchoSocket(WebSocketHandler):
    """Echoes messages; ``close:<code>`` makes it close with that code; records its close."""

    closes = []

    def select_subprotocol(self, subprotocols):
        return "echo" if "echo" in subprotocols else None

    def open(self):
        self.write_message(json.dumps({"cookie": self.request.headers.get("Cookie")}))

    def on_message(self, message):
        if isinstance(message, str) and message.startswith("close:"):
            self.close(int(message[6:]), "upstream says bye")
        else:
            self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        self.closes.append((self.close_code, self.close_reason))


@pytest.fixture
def fake_dashboard():
    """The tiny upstream app; yields its base URL."""
    _EchoSocket.closes = []
    server, url = start_server(
        web.Application(
            [
                (r"/redirect/(.*)", _Redirect),
                (r"/code/(\d+)", _Status),
                (r"/ws", _EchoSocket),
                (r"/.*", _EchoRequest),
            ]
        )
    )
    yield url
    server.stop()


# ---------------------------------------------------------------- the app under test


@pytest.fixture
async def scheduler():
    """A real scheduler with its Bokeh dashboard on 127.0.0.1."""
    from distributed import Scheduler

    async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0") as s:
        yield s


@pytest.fixture
async def proxy_app(scheduler, fake_dashboard):
    """The gateway-like app: ``good`` → the scheduler, ``fake`` → the tiny upstream,
    ``forbidden`` → 403, ``down`` → nothing listening. Yields (base URL, resolve calls)."""
    calls = []
    unused = closed_port()
    targets = {
        "good": f"http://127.0.0.1:{scheduler.http_server.port}",
        "fake": fake_dashboard,
        "down": f"http://127.0.0.1:{unused.getsockname()[1]}",
    }

    class Handler(DashboardProxyHandler):
        async def resolve_dashboard(self, cluster_name):
            calls.append((self.request.method, cluster_name, self.request.headers.get("Upgrade")))
            if cluster_name not in targets:
                raise web.HTTPError(403)
            return targets[cluster_name]

    class AuthenticatingBase(web.RequestHandler):
        """Like the gateway's base handler: authenticates in ``prepare``."""

        async def prepare(self):
            if self.request.headers.get("X-User") != "alice":
                raise web.HTTPError(401)
            calls.append("authenticated")

    class AuthenticatedHandler(AuthenticatingBase, Handler):
        async def prepare(self):
            await AuthenticatingBase.prepare(self)
            await Handler.prepare(self)

    server, url = start_server(
        web.Application(
            [
                (ROUTE, Handler),
                (ROUTE.replace("/services/", "/auth/services/"), AuthenticatedHandler),
            ]
        )
    )
    yield url, calls
    server.stop()
    unused.close()


async def fetch(url, **kwargs):
    kwargs.setdefault("raise_error", False)
    kwargs.setdefault("follow_redirects", False)
    return await AsyncHTTPClient().fetch(url, **kwargs)


# ---------------------------------------------------------------- the real dashboard


async def test_status_page_and_static_assets(proxy_app):
    url, calls = proxy_app
    page = await fetch(f"{url}{BASE}/good/status")
    assert page.code == 200
    html = page.body.decode()
    assert "Bokeh" in html and "render_items" in html
    assert calls[-1] == ("GET", "good", None)

    # The page refers to its assets relatively, so they resolve under the prefix.
    assets = re.findall(r'(?:src|href)="((?:static|statics)/[^"]+)"', html)
    assert any(a.startswith("static/js/bokeh.min.js") for a in assets)
    for asset in assets:
        response = await fetch(f"{url}{BASE}/good/{asset}")
        assert response.code == 200, asset
        assert response.body
    js = await fetch(f"{url}{BASE}/good/" + next(a for a in assets if "bokeh.min.js" in a))
    assert "javascript" in js.headers["Content-Type"]
    assert b"Bokeh" in js.body

    # Other dashboard pages and JSON endpoints.
    plots = await fetch(f"{url}{BASE}/good/individual-plots.json")
    assert plots.code == 200 and json.loads(plots.body)


async def test_redirects_stay_under_the_prefix(proxy_app):
    url, _ = proxy_app
    # No path at all: our own redirect to the status page.
    response = await fetch(f"{url}{BASE}/good")
    assert response.code == 302
    assert response.headers["Location"] == f"{BASE}/good/status"
    # "/" on the dashboard redirects to "/status": rewritten under the prefix.
    response = await fetch(f"{url}{BASE}/good/")
    assert response.code in (301, 302)
    assert response.headers["Location"] == f"{BASE}/good/status"
    # Followed all the way, it lands on the status page.
    response = await fetch(f"{url}{BASE}/good", follow_redirects=True)
    assert response.code == 200 and response.effective_url.endswith(f"{BASE}/good/status")


async def test_bokeh_websocket(proxy_app):
    url, calls = proxy_app
    page = await fetch(f"{url}{BASE}/good/status")
    # Bokeh's browser code opens <page>/ws with the subprotocols ["bokeh", <session token>].
    token = re.search(r'"token":"([^"]+)"', page.body.decode()).group(1)
    ws = await websocket_connect(f"ws{url[4:]}{BASE}/good/status/ws", subprotocols=["bokeh", token])
    try:
        assert ws.selected_subprotocol == "bokeh"
        assert calls[-1] == ("GET", "good", "websocket")

        async def read_bokeh_message():
            header = json.loads(await ws.read_message())
            await ws.read_message()  # metadata
            await ws.read_message()  # content
            for _ in range(header.get("num_buffers", 0)):
                await ws.read_message()
            return header

        # The server greets with ACK; then a request/reply round trip.
        assert (await read_bokeh_message())["msgtype"] == "ACK"
        await ws.write_message(json.dumps({"msgid": "42", "msgtype": "PULL-DOC-REQ"}))
        await ws.write_message("{}")
        await ws.write_message("{}")
        reply = await read_bokeh_message()
        assert reply["msgtype"] == "PULL-DOC-REPLY"
        assert reply["reqid"] == "42"
    finally:
        ws.close()


# ---------------------------------------------------------------- refusals and failures


async def test_forbidden_is_refused_before_anything_else(proxy_app):
    url, calls = proxy_app
    for path in ("", "/", "/status", "/statics/css/base.css"):
        response = await fetch(f"{url}{BASE}/forbidden{path}")
        assert response.code == 403, path
        assert json.loads(response.body) == {"error": "Forbidden"}
    response = await fetch(f"{url}{BASE}/forbidden/x", method="POST", body=b"")
    assert response.code == 403
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(f"ws{url[4:]}{BASE}/forbidden/status/ws")
    assert e.value.code == 403
    assert calls[-1] == ("GET", "forbidden", "websocket")


async def test_unreachable_dashboard_is_502(proxy_app):
    url, _ = proxy_app
    for method in ("GET", "POST", "HEAD"):
        response = await fetch(
            f"{url}{BASE}/down/status",
            method=method,
            body=b"x" if method == "POST" else None,
        )
        assert response.code == 502, method
        if method != "HEAD":
            assert "unreachable" in json.loads(response.body)["error"]
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(f"ws{url[4:]}{BASE}/down/status/ws")
    assert e.value.code == 502


# ---------------------------------------------------------------- HTTP details


async def test_headers_methods_and_bodies(proxy_app):
    url, _ = proxy_app
    response = await fetch(
        f"{url}{BASE}/fake/some/path?a=1&token=secret",
        headers={
            "Authorization": "token hub-token",
            "Cookie": "jupyterhub-session-id=abc",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Accept-Language": "fr",
        },
    )
    assert response.code == 200
    seen = json.loads(response.body)
    assert seen["method"] == "GET"
    # The prefix is stripped; the query string passes untouched.
    assert seen["uri"] == "/some/path?a=1&token=secret"
    headers = seen["headers"]
    assert "authorization" not in headers and "cookie" not in headers
    assert "x-hop" not in headers
    assert headers["x-custom"] == "kept" and headers["accept-language"] == "fr"
    assert headers["x-forwarded-prefix"] == f"{BASE}/fake"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    # Host is the dashboard's own, not the gateway's.
    assert headers["host"] != url.split("//")[1]
    # The dashboard cannot set cookies on the gateway's origin; its other headers pass.
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Upstream"] == "yes"

    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        body = f"payload for {method}".encode() if method in ("POST", "PUT", "PATCH") else None
        response = await fetch(
            f"{url}{BASE}/fake/api",
            method=method,
            body=body,
            headers={"Content-Type": "application/octet-stream"},
            allow_nonstandard_methods=True,
        )
        assert response.code == 200, method
        seen = json.loads(response.body)
        assert seen["method"] == method
        assert seen["body"] == (body.decode() if body else "")

    response = await fetch(f"{url}{BASE}/fake/anything", method="HEAD")
    assert response.code == 200
    assert response.headers["Content-Length"] == "1234"
    assert response.body == b""


async def test_status_codes_pass_through(proxy_app):
    url, _ = proxy_app
    for code in (201, 204, 404, 418, 500, 503):
        response = await fetch(f"{url}{BASE}/fake/code/{code}")
        assert response.code == code
        if code != 204:
            assert json.loads(response.body) == {"code": code}


async def test_location_rewriting(proxy_app):
    url, _ = proxy_app
    expected = {
        "absolute-path": f"{BASE}/fake/status?x=1",
        "relative": "status",
        "own-url": f"{BASE}/fake/workers#top",
        # ".." above the dashboard's root stays at its root
        "climbing-absolute": f"{BASE}/fake/hub/api",
    }
    for kind, location in expected.items():
        response = await fetch(f"{url}{BASE}/fake/redirect/{kind}")
        assert response.code == 302
        assert response.headers["Location"] == location, kind
    # Anything that would leave the cluster's prefix is refused, never passed on.
    for kind in ("foreign", "scheme-relative", "climbing"):
        response = await fetch(f"{url}{BASE}/fake/redirect/{kind}")
        assert response.code == 502, kind
        assert "Location" not in response.headers
        assert "redirected outside" in json.loads(response.body)["error"]


# ---------------------------------------------------------------- websocket details


async def test_websocket_relay_and_close_codes(proxy_app):
    url, _ = proxy_app
    request = HTTPRequest(
        f"ws{url[4:]}{BASE}/fake/ws",
        headers={"Cookie": "jupyterhub-session-id=abc", "Authorization": "token t"},
    )
    ws = await websocket_connect(request, subprotocols=["echo", "other"])
    assert ws.selected_subprotocol == "echo"
    assert json.loads(await ws.read_message()) == {"cookie": None}
    await ws.write_message("text message")
    assert await ws.read_message() == "text message"
    payload = bytes(range(256)) * 1000
    await ws.write_message(payload, binary=True)
    echoed = await ws.read_message()
    assert isinstance(echoed, bytes) and echoed == payload

    # The dashboard closes with a code: our client sees that code.
    await ws.write_message("close:4001")
    assert await ws.read_message() is None
    assert ws.close_code == 4001
    assert ws.close_reason == "upstream says bye"

    # Our client closes with a code: the dashboard sees it.
    ws = await websocket_connect(f"ws{url[4:]}{BASE}/fake/ws")
    await ws.read_message()
    ws.close(4002, "client says bye")

    deadline = time.monotonic() + 10
    while (4002, "client says bye") not in _EchoSocket.closes:
        assert time.monotonic() < deadline, _EchoSocket.closes
        await asyncio.sleep(0.02)


async def test_application_prepare_runs_first(proxy_app):
    """A gateway handler that authenticates in ``prepare`` and then lets the proxy resolve."""
    url, calls = proxy_app
    auth_base = f"{url}/auth{BASE}"
    calls.clear()
    response = await fetch(f"{auth_base}/good/status")
    assert response.code == 401
    assert calls == []

    response = await fetch(f"{auth_base}/good/status", headers={"X-User": "alice"})
    assert response.code == 200
    # Resolved exactly once per request, after authentication.
    assert calls == ["authenticated", ("GET", "good", None)]

    calls.clear()
    response = await fetch(f"{auth_base}/forbidden/status", headers={"X-User": "alice"})
    assert response.code == 403
    assert calls == ["authenticated", ("GET", "forbidden", None)]

    calls.clear()
    request = HTTPRequest(f"ws{auth_base[4:]}/fake/ws", headers={"X-User": "alice"})
    ws = await websocket_connect(request)
    assert json.loads(await ws.read_message()) == {"cookie": None}
    ws.close()
    assert calls == ["authenticated", ("GET", "fake", "websocket")]
