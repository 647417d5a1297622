"""Reverse proxy for scheduler dashboards: HTTP requests and Bokeh's websockets.

This module owns :class:`DashboardProxyHandler`, a tornado handler the gateway
mounts at ``<prefix>clusters/(?P<cluster_name>[^/]+)(?P<path>/.*)?``. It
forwards ``/clusters/<name>/<path>`` to ``<dashboard URL>/<path>`` (the
scheduler's dashboard is served at ``/``, so the prefix is stripped) and relays
websocket messages both ways.

It leaves authentication, permissions and the cluster lookup to the gateway:
a subclass overrides :meth:`DashboardProxyHandler.resolve_dashboard`, which is
awaited before anything else happens and either raises (403, 404, ...) or
returns the dashboard's base URL. The client's ``Authorization`` and ``Cookie``
headers never reach the scheduler, and the scheduler cannot set cookies on the
gateway's origin.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
from http.client import responses
from urllib.parse import unquote, urlsplit, urlunsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.log import app_log
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

__all__ = ["DashboardProxyHandler"]

# RFC 9110 §7.6.1: connection-specific headers, never forwarded by a proxy.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers that are the gateway's business, not the scheduler's (credentials
# for the Hub or the gateway), or that the HTTP client sets itself.
_DROP_REQUEST = _HOP_BY_HOP | {"authorization", "cookie", "host", "content-length", "expect"}
# Set by the websocket client for its own handshake with the scheduler.
_DROP_WEBSOCKET_REQUEST = _DROP_REQUEST | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "accept-encoding",
}
# Response headers tornado writes itself, or that must not cross origins, or with which a
# dashboard (the cluster owner's code) could reach beyond its own path on our origin:
# cookies, a service worker for a wider scope, wiping the viewer's site data, CORS grants
# to other sites, a delayed redirect anywhere, a policy of its own in place of ours.
_DROP_RESPONSE = _HOP_BY_HOP | {
    "content-length",
    "server",
    "date",
    "set-cookie",
    "service-worker-allowed",
    "clear-site-data",
    "refresh",
    "content-security-policy",
    "content-security-policy-report-only",
    "cross-origin-opener-policy",
    "cross-origin-embedder-policy",
    "x-frame-options",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
}

_CLUSTER_SEGMENT = re.compile(r"/clusters/([^/?]+)")


def _sendable_close_code(code: int | None) -> int | None:
    """A close code that may appear in a close frame (RFC 6455 §7.4), else None."""
    if code is None:
        return None
    if (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999:
        return code
    return None


class DashboardProxyHandler(WebSocketHandler):
    """Proxy ``/clusters/<name>/<path>`` to that cluster's dashboard.

    Requests carrying ``Upgrade: websocket`` are proxied as websockets (text
    and binary messages, subprotocols and close codes relayed); all other
    requests (GET, POST, HEAD, PUT, DELETE, PATCH, OPTIONS) as buffered HTTP.
    ``/clusters/<name>`` without a path redirects to ``/clusters/<name>/status``.
    An unreachable dashboard gives ``502`` with ``{"error": ...}``.

    Subclasses must override :meth:`resolve_dashboard`. The attributes
    ``connect_timeout`` and ``request_timeout`` (seconds) may be overridden;
    an application setting ``dashboard_proxy_http_client`` (an
    ``AsyncHTTPClient``) replaces tornado's shared client for HTTP requests.
    """

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    connect_timeout = 10.0
    request_timeout = 60.0

    _target: str | None = None
    _upstream = None
    _relay_task = None

    async def resolve_dashboard(self, cluster_name: str) -> str:
        """Check access to ``cluster_name`` and return its dashboard's base URL.

        Called before anything else, for every request. Raise an error (e.g.
        ``tornado.web.HTTPError(403)`` or the gateway's typed errors) to refuse.
        """
        raise NotImplementedError("subclasses decide which dashboards a user may see")

    def frame_ancestors(self) -> str:
        """CSP ``frame-ancestors`` of proxied pages: who may embed them ('self' by default)."""
        return "'self'"

    def page_policy(self, cluster_name: str) -> dict[str, str]:
        """Headers every proxied response gets, so its page acts only within its own path.

        A dashboard's HTML and JS are the cluster owner's, served on our origin to
        whoever views it. The Content-Security-Policy confines every fetch, websocket,
        script, frame and form of the page to the cluster's own prefix (the browser
        then refuses to request the gateway's API, the Hub or another cluster), and
        Cross-Origin-Opener-Policy cuts the page off from the window that opened it
        and from any window it opens (which would be same-origin pages it could
        script). Redirects stay under the prefix (``_rewrite_location``).
        """
        host = self.request.host
        base = self._base_path(cluster_name) + "/"
        own = " ".join(f"{scheme}://{host}{base}" for scheme in ("http", "https", "ws", "wss"))
        policy = "; ".join(
            [
                f"default-src {own}",
                f"script-src {own} 'unsafe-inline' 'unsafe-eval'",
                f"style-src {own} 'unsafe-inline'",
                f"img-src {own} data: blob:",
                f"font-src {own} data:",
                f"worker-src {own} blob:",
                f"connect-src {own}",
                f"frame-src {own}",
                f"form-action {own}",
                f"base-uri {own}",
                "object-src 'none'",
                f"frame-ancestors {self.frame_ancestors()}",
            ]
        )
        return {
            "Content-Security-Policy": policy,
            "Cross-Origin-Opener-Policy": "same-origin",
            "Referrer-Policy": "same-origin",
        }

    def upstream_headers(self) -> dict[str, str]:
        """Headers added to every request to the dashboard (after ``resolve_dashboard``).

        They replace any header of the same name the browser sent.
        """
        return {}

    def get_http_client(self) -> AsyncHTTPClient:
        return self.settings.get("dashboard_proxy_http_client") or AsyncHTTPClient()

    # ---------------------------------------------------------------- dispatch

    async def prepare(self) -> None:
        """Resolve the dashboard, after whatever the application's ``prepare`` did.

        A subclass whose own ``prepare`` authenticates calls this afterwards;
        if it never does, the HTTP method resolves instead, still before
        anything else happens.
        """
        result = super().prepare()
        if result is not None:
            await result
        if not self._finished:
            await self._resolve(self.path_kwargs["cluster_name"])

    async def _resolve(self, cluster_name: str) -> str:
        if self._target is None:
            self._target = await self.resolve_dashboard(cluster_name)
        return self._target

    def _refuse_service_worker(self) -> bool:
        # A service worker registered from a dashboard would outlive the page and see every
        # later request under its scope; no dashboard needs one.
        if self.request.headers.get("Service-Worker", "").lower() == "script":
            self.set_status(403)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": "Dashboards may not register service workers"}))
            return True
        return False

    async def get(self, cluster_name: str, path: str | None = None) -> None:
        target = await self._resolve(cluster_name)
        if self._refuse_service_worker():
            return
        if self._redirect_bare(cluster_name, path):
            return
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._proxy_websocket(target, cluster_name, path)
        else:
            await self._proxy_http(target, cluster_name)

    async def _http_method(self, cluster_name: str, path: str | None = None) -> None:
        target = await self._resolve(cluster_name)
        if self._refuse_service_worker():
            return
        if not self._redirect_bare(cluster_name, path):
            await self._proxy_http(target, cluster_name)

    head = post = put = delete = patch = options = _http_method

    def _redirect_bare(self, cluster_name: str, path: str | None) -> bool:
        if path:
            return False
        url = self._base_path(cluster_name) + "/status"
        if self.request.query:
            url += "?" + self.request.query
        self.redirect(url)
        return True

    def _base_path(self, cluster_name: str) -> str:
        """The raw (still percent-encoded) request path up to and including the cluster name."""
        raw = self.request.path
        for match in _CLUSTER_SEGMENT.finditer(raw):
            if unquote(match.group(1)) == cluster_name:
                return raw[: match.end()]
        # Only reachable if the route is not the documented one; fall back to the decoded form.
        return raw.rstrip("/")

    def _upstream_path(self, cluster_name: str) -> str:
        path = self.request.path[len(self._base_path(cluster_name)) :] or "/"
        if self.request.query:
            path += "?" + self.request.query
        return path

    def _forwarded_headers(self, drop: frozenset[str], cluster_name: str) -> dict[str, str]:
        incoming = self.request.headers
        # Headers listed in Connection are hop-by-hop too.
        listed = {h.strip().lower() for h in incoming.get("Connection", "").split(",")}
        ours = self.upstream_headers()
        listed |= {name.lower() for name in ours}
        headers = {}
        for name in incoming:
            if name.lower() in drop or name.lower() in listed:
                continue
            headers[name] = ", ".join(incoming.get_list(name))
        # Proxies before us (the Hub's) may have started the chain already.
        chain = [incoming.get("X-Forwarded-For", ""), self.request.remote_ip or ""]
        headers["X-Forwarded-For"] = ", ".join(p for p in chain if p)
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Prefix"] = self._base_path(cluster_name)
        headers.update(ours)
        return headers

    def _bad_gateway(self, cluster_name: str, error: Exception) -> None:
        app_log.warning("Dashboard of cluster %r is unreachable: %s", cluster_name, error)
        self.set_status(502)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"error": f"The dashboard of cluster {cluster_name!r} is unreachable"})
        )

    def write_error(self, status_code: int, **kwargs) -> None:
        """Errors are ``{"error": message}``, like the rest of the gateway's API."""
        message = responses.get(status_code, "Unknown error")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.reason:
            message = exc.reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def compute_etag(self):
        # Caching is the dashboard's call, through its own headers.
        return None

    # ---------------------------------------------------------------- HTTP

    async def _proxy_http(self, target: str, cluster_name: str) -> None:
        base = target.rstrip("/")
        method = self.request.method
        body = (
            self.request.body if method in ("POST", "PUT", "PATCH") or self.request.body else None
        )
        request = HTTPRequest(
            base + self._upstream_path(cluster_name),
            method=method,
            headers=self._forwarded_headers(_DROP_REQUEST, cluster_name),
            body=body,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
        )
        try:
            response = await self.get_http_client().fetch(request, raise_error=False)
        except (TimeoutError, OSError, HTTPClientError) as e:
            self._bad_gateway(cluster_name, e)
            return
        if response.code == 599:
            self._bad_gateway(cluster_name, response.error)
            return

        location = response.headers.get("Location")
        if location is not None:
            location = self._rewrite_location(location, target, cluster_name)
            if location is None:
                app_log.warning("Dashboard of cluster %r redirected outside of it", cluster_name)
                self.set_status(502)
                self.set_header("Content-Type", "application/json")
                self.finish(
                    json.dumps(
                        {
                            "error": f"The dashboard of cluster {cluster_name!r} redirected "
                            "outside of itself"
                        }
                    )
                )
                return
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        listed = {h.strip().lower() for h in response.headers.get("Connection", "").split(",")}
        for name, value in response.headers.get_all():
            lower = name.lower()
            if lower in listed or (lower in _DROP_RESPONSE and not self._keep_length(lower)):
                continue
            if lower == "location":
                value = location
            self.add_header(name, value)
        for name, value in self.page_policy(cluster_name).items():
            self.set_header(name, value)
        if method != "HEAD" and response.body and response.code not in (204, 304):
            self.write(response.body)
        self.finish()

    def _keep_length(self, lower_name: str) -> bool:
        # A HEAD response has no body for tornado to measure: keep the dashboard's length.
        return lower_name == "content-length" and self.request.method == "HEAD"

    def _rewrite_location(self, location: str, target: str, cluster_name: str) -> str | None:
        """Keep redirects from the dashboard (which lives at ``/``) under our prefix.

        Returns None for a redirect that would leave the cluster's prefix (another
        host, or a relative path climbing out of it): the dashboard must not send the
        viewer's browser anywhere else under our name.
        """
        parsed = urlsplit(location)
        upstream = urlsplit(target)
        base = self._base_path(cluster_name)
        if parsed.scheme or parsed.netloc:
            if (parsed.scheme, parsed.netloc) != (upstream.scheme, upstream.netloc):
                return None
        elif not location.startswith("/"):
            # Relative references resolve against the proxied path: check where they land.
            here = self.request.path
            landed = posixpath.normpath(posixpath.join(posixpath.dirname(here), parsed.path))
            if parsed.path.endswith("/") and not landed.endswith("/"):
                landed += "/"
            if landed != base and not landed.startswith(base + "/"):
                return None
            return location
        path = parsed.path or "/"
        upstream_prefix = upstream.path.rstrip("/")
        if upstream_prefix and (path == upstream_prefix or path.startswith(upstream_prefix + "/")):
            path = path[len(upstream_prefix) :] or "/"
        path = posixpath.normpath(path) + ("/" if path.endswith("/") and path != "/" else "")
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        rest = urlunsplit(("", "", path, parsed.query, parsed.fragment))
        return base + rest

    # ---------------------------------------------------------------- websockets

    async def _proxy_websocket(self, target: str, cluster_name: str, path: str) -> None:
        parts = urlsplit(target.rstrip("/") + self._upstream_path(cluster_name))
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        url = urlunsplit((scheme, *parts[1:]))
        offered = [
            p.strip()
            for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        request = HTTPRequest(
            url,
            headers=self._forwarded_headers(_DROP_WEBSOCKET_REQUEST, cluster_name),
            connect_timeout=self.connect_timeout,
            request_timeout=self.connect_timeout,
        )
        try:
            # Connect upstream first, so a dead dashboard is a 502 and not an accepted,
            # instantly closed websocket.
            self._upstream = await websocket_connect(
                request,
                subprotocols=offered or None,
                max_message_size=self.max_message_size,
            )
        except HTTPClientError as e:
            if e.code == 599:
                self._bad_gateway(cluster_name, e)
            else:
                # The dashboard refused the upgrade itself (404, 403, ...): pass that on.
                self.set_status(e.code)
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps({"error": f"Dashboard refused the websocket: {e}"}))
            return
        except (TimeoutError, OSError) as e:
            self._bad_gateway(cluster_name, e)
            return
        try:
            # Performs the handshake with our client, then runs until it closes.
            await super().get(cluster_name, path)
        finally:
            self._close_upstream(None, None)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # Whatever the dashboard chose (bokeh: "bokeh") from what our client offered.
        chosen = self._upstream.selected_subprotocol if self._upstream else None
        return chosen if chosen in subprotocols else None

    def open(self, cluster_name: str, path: str | None = None) -> None:
        self._relay_task = asyncio.ensure_future(self._relay_from_upstream())

    async def _relay_from_upstream(self) -> None:
        upstream = self._upstream
        while True:
            message = await upstream.read_message()
            if message is None:
                break
            try:
                # Awaiting the write is our backpressure towards the dashboard.
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                return
        self.close(_sendable_close_code(upstream.close_code), upstream.close_reason)

    async def on_message(self, message: str | bytes) -> None:
        # tornado reads the next frame only after this returns: backpressure upstream.
        if self._upstream is None:
            return
        try:
            await self._upstream.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            self.close()

    def on_close(self) -> None:
        # Also called when a plain HTTP client disconnects early: then there is no upstream.
        self._close_upstream(_sendable_close_code(self.close_code), self.close_reason)

    def _close_upstream(self, code: int | None, reason: str | None) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close(code, reason)
