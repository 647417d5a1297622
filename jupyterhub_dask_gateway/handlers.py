"""The REST API (docs/protocol.md), the scheduler's heartbeat, the proxy's routes, dashboards.

Each handler authenticates in ``prepare`` (asynchronously, never blocking the
loop), checks permissions against ``models.User``, and calls the cluster manager.
Every error leaves through ``write_error`` as ``{"error": message}``; a 401 carries
the authenticator's ``WWW-Authenticate`` challenge, since the dask-gateway client
only sends credentials after one.
"""

from __future__ import annotations

import json

from tornado import web

from . import __version__
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidOptions,
    NotFound,
    Unauthorized,
)
from .listing import listed
from .metrics import METRICS_CONTENT_TYPE, METRICS_SCOPE, may_read_metrics
from .models import ClusterStatus
from .proxy.dashboard import DashboardProxyHandler
from .proxy.stats import HEADER as PROXY_STATS_HEADER
from .reconcile import MAX_WORKERS
from .utils import DASHBOARD_KEY_HEADER, dashboard_key, same_secret


class BaseHandler(web.RequestHandler):
    """Authentication, JSON bodies and error rendering shared by every handler."""

    requires_user = True

    @property
    def gateway(self):
        return self.settings["gateway"]

    @property
    def manager(self):
        return self.gateway.manager

    @property
    def log(self):
        return self.gateway.log

    # Browsers set Sec-Fetch-Mode on every request; these are the ones a page's script made
    # (a navigation says "navigate"). Programs (the client, the relay) send none.
    _SCRIPT_FETCH_MODES = frozenset({"cors", "no-cors", "same-origin", "websocket"})
    # API handlers refuse requests a page's script made with ambient credentials (cookies,
    # a browser's cached Basic login); the dashboard handler serves pages and allows them.
    serves_pages = False

    def check_xsrf_cookie(self):
        # Called by the Hub's OAuth code before it accepts a cookie (tornado's own
        # xsrf_cookies setting is off): the authenticator applies the Hub's rules.
        self.gateway.authenticator.check_xsrf_cookie(self)

    def set_default_headers(self):
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        # Also after an error cleared the response: the client checks them on every answer.
        for name, value in (self._auth_headers or {}).items():
            self.set_header(name, value)

    # Set by set_auth_header during this request (per instance: handlers are per request).
    _auth_headers: dict[str, str] | None = None

    def set_auth_header(self, name: str, value: str) -> None:
        """A header the authenticator's answer needs on this response whatever its status
        (Kerberos's mutual-authentication token), error responses included."""
        self._auth_headers = {**(self._auth_headers or {}), name: value}
        self.set_header(name, value)

    async def prepare(self):
        if not self.requires_user:
            return
        user = await self.gateway.authenticator.authenticate(self)
        if user is None:
            raise Unauthorized("Authentication required")
        mode = self.request.headers.get("Sec-Fetch-Mode", "")
        if (
            not self.serves_pages
            and mode in self._SCRIPT_FETCH_MODES
            and not self.gateway.authenticator.explicit_credentials(self)
        ):
            # A page's script using the viewer's cookies (say, a dashboard's): refused.
            raise Forbidden(
                "The API does not answer scripts in web pages that use the browser's "
                "cookies or saved logins; send a token in the Authorization header"
            )
        self.current_user = user

    def json_body(self) -> dict:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: nesting deeper than the parser's stack (a hostile body).
            raise BadRequest("Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object")
        return body

    def write_json(self, data, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GatewayError):
            message = exc.message
            status_code = exc.status_code
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = self._reason if status_code != 500 else "Internal server error"
        self.set_status(status_code)
        if status_code == 401:
            self.set_header("WWW-Authenticate", self.gateway.authenticator.challenge)
        self.set_header("Content-Type", "application/json")
        self.clear_header("Set-Cookie") if status_code >= 400 and status_code != 401 else None
        self.finish(json.dumps({"error": message}))

    def on_finish(self):
        # The request-duration histogram (metrics.py): one dict lookup and an observation.
        metrics = self.gateway.metrics
        if metrics is not None:
            metrics.observe_request(self)

    def log_exception(self, typ, value, tb):
        if isinstance(value, GatewayError):
            if value.status_code >= 500:
                self.log.warning("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def cluster_for(self, name: str, manage: bool = False):
        """The named cluster if the current user may see (or manage) it."""
        cluster = self.manager.get(name)
        user = self.current_user
        if not user.may_view(cluster):
            # Invisible to strangers: the same answer as for a cluster that doesn't exist.
            raise NotFound(f"Cluster {name} not found")
        if manage and not user.may_manage(cluster):
            raise Forbidden(f"User {user.name} may not modify cluster {name}")
        return cluster


def _check(ok: bool, field: str, expected: str) -> None:
    if not ok:
        raise BadRequest(f"Heartbeat field {field!r} must be {expected}")


def _is_int(value, low=0, high=MAX_WORKERS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_heartbeat(body: dict) -> dict:
    """The scheduler's heartbeat, type-checked field by field (it runs the owner's code).

    Raises ``BadRequest`` naming the first malformed field; nothing is applied then.
    """
    for field in ("scheduler_address", "dashboard_address", "api_address"):
        value = body.get(field, "")
        _check(isinstance(value, str) and len(value) <= 1024, field, "a string")
    if "count" in body:
        _check(_is_int(body["count"]), "count", f"an integer from 0 to {MAX_WORKERS}")
    adaptive = body.get("adaptive")
    _check(
        adaptive is None
        or (
            isinstance(adaptive, dict)
            and set(adaptive) == {"minimum", "maximum"}
            and all(_is_int(v) for v in adaptive.values())
        ),
        "adaptive",
        "null or {minimum, maximum} integers",
    )
    workers = body.get("workers", {})
    _check(isinstance(workers, dict) and len(workers) <= MAX_WORKERS, "workers", "an object")
    for info in workers.values():
        _check(
            isinstance(info, dict)
            and _is_int(info.get("nthreads", 0), high=2**31)
            and _is_int(info.get("memory_limit", 0), high=2**62),
            "workers",
            "{name: {nthreads, memory_limit}} with integers",
        )
    for field in ("closing_workers", "closed_workers"):
        value = body.get(field, [])
        _check(
            isinstance(value, list) and all(isinstance(v, str) for v in value),
            field,
            "a list of worker names",
        )
    _check(isinstance(body.get("handoff", False), bool), "handoff", "a boolean")
    return body


def parse_status_filter(raw: str | None):
    if raw is None:
        return None
    out = set()
    for part in raw.split(","):
        if part.strip():
            try:
                out.add(ClusterStatus.from_name(part))
            except ValueError as exc:
                raise InvalidOptions(str(exc)) from None
    return out


class VersionHandler(BaseHandler):
    requires_user = False

    def get(self):
        self.write_json({"version": __version__})


class HealthHandler(BaseHandler):
    requires_user = False

    def get(self):
        ok = self.gateway.healthy()
        self.write_json({"status": "pass" if ok else "fail"}, 200 if ok else 503)


class ClustersHandler(BaseHandler):
    """``GET/POST api/v1/clusters/``: the caller's clusters, and creation."""

    def get(self):
        statuses = parse_status_filter(self.get_query_argument("status", None))
        # Clients poll their list; the answer is reused until a cluster changes.
        body = self.manager.listing(
            self.current_user, statuses, self.gateway.dashboard_route_prefix
        )
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def compute_etag(self):
        # The answer is Cache-Control: no-store; hashing a 100-cluster list (~300 KB of
        # certificates) on every request would cost more than the encoding itself.
        return None

    async def post(self):
        body = self.json_body()
        unknown = set(body) - {"cluster_options"}
        if unknown:
            raise BadRequest(f"Unknown fields in request: {sorted(unknown)}")
        cluster = await self.manager.create(self.current_user, body.get("cluster_options"))
        self.write_json({"name": cluster.name}, 201)


class ClusterHandler(BaseHandler):
    """``GET/DELETE/PATCH api/v1/clusters/<name>``."""

    async def prepare(self):
        # The scheduler's idle-timeout shutdown authenticates with its cluster token.
        if self.request.method == "DELETE":
            scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
            if scheme == "token" and token:
                name = self.path_kwargs.get("name", "")
                cluster = self.manager.clusters.get(name)
                if cluster and same_secret(token.strip(), cluster.token):
                    self.cluster_token_auth = True
                    return
        self.cluster_token_auth = False
        await super().prepare()

    async def get(self, name):
        cluster = self.cluster_for(name)
        raw = self.get_query_argument("wait", None)
        if raw is not None:
            try:
                wait = raw == "" or bool(int(raw))
            except ValueError:
                wait = False
            if wait:
                await self.manager.wait_ready(cluster, self.gateway.wait_timeout)
                # Only the client's start loop waits; a 409 there becomes a
                # GatewayClusterError carrying the reason, instead of "see logs" or
                # "already stopped".
                if cluster.public_status == ClusterStatus.FAILED:
                    raise Conflict(
                        f"Cluster {name} failed to start: {cluster.reason or 'unknown reason'}"
                    )
                if cluster.public_status == ClusterStatus.STOPPED and cluster.reason:
                    raise Conflict(f"Cluster {name} is stopped: {cluster.reason}")
        self.write_json(cluster.to_wire(self.gateway.dashboard_route_prefix))

    def delete(self, name):
        if self.cluster_token_auth:
            self.manager.stop(self.manager.get(name), "idle timeout")
        else:
            try:
                cluster = self.cluster_for(name, manage=True)
            except NotFound:
                cluster = None  # stopping what doesn't exist is a no-op, as in the reference
            if cluster is not None:
                self.manager.stop(cluster, f"requested by {self.current_user.name}")
        self.set_status(204)
        self.finish()

    def patch(self, name):
        cluster = self.cluster_for(name, manage=True)
        body = self.json_body()
        unknown = set(body) - {"shared_groups"}
        if unknown:
            raise BadRequest(f"Unknown fields in request: {sorted(unknown)}")
        if "shared_groups" in body:
            self.manager.share(cluster, body["shared_groups"])
        self.write_json(cluster.details(self.gateway.dashboard_route_prefix))


class ScaleHandler(BaseHandler):
    async def post(self, name):
        cluster = self.cluster_for(name, manage=True)
        body = self.json_body()
        if "count" not in body:
            raise InvalidOptions("Scale expects a 'count' field")
        ok, msg = await self.manager.scale(cluster, body["count"], by=self.current_user.name)
        self.write_json({"ok": ok, "msg": msg})


class AdaptHandler(BaseHandler):
    async def post(self, name):
        cluster = self.cluster_for(name, manage=True)
        body = self.json_body()
        unknown = set(body) - {"minimum", "maximum", "active"}
        if unknown:
            raise BadRequest(f"Unknown fields in request: {sorted(unknown)}")
        ok, msg = await self.manager.adapt(
            cluster,
            body.get("minimum"),
            body.get("maximum"),
            body.get("active", True),
            by=self.current_user.name,
        )
        self.write_json({"ok": ok, "msg": msg})


class OptionsHandler(BaseHandler):
    async def get(self):
        options = await self.manager.cluster_options(self.current_user)
        self.write_json({"cluster_options": options.spec()})


class WhoAmIHandler(BaseHandler):
    def get(self):
        u = self.current_user
        self.write_json({"name": u.name, "groups": sorted(u.groups), "admin": u.admin})


class ClusterDetailsHandler(BaseHandler):
    """Richer listing for the Lab panel and admins (the client's own format is untouched)."""

    def get(self, name=None):
        user = self.current_user
        prefix = self.gateway.dashboard_route_prefix
        if name:
            self.write_json(self.cluster_for(name).details(prefix))
            return
        everyone = self.get_query_argument("all", "0") not in ("0", "", "false")
        if everyone and not user.admin:
            raise Forbidden("Only admins may list every user's clusters")
        statuses = parse_status_filter(self.get_query_argument("status", None))
        out = [
            c.details(prefix)
            for c in self.manager.clusters.values()
            if listed(c, user, statuses, everyone)
        ]
        out.sort(key=lambda d: d["start_time"])
        self.write_json({"clusters": out})


class _OwnerOnlyHandler(BaseHandler):
    """What only a cluster's owner and admins may read (its history, its logs)."""

    def owned_cluster(self, name: str):
        cluster = self.cluster_for(name)  # strangers: 404, as if it did not exist
        if not self.current_user.may_manage(cluster):
            raise Forbidden(
                f"Only the owner and admins may read the events and logs of cluster {name}"
            )
        return cluster


class EventsHandler(_OwnerOnlyHandler):
    """``GET api/v1/clusters/<name>/events``: the cluster's history, oldest first."""

    def get(self, name):
        cluster = self.owned_cluster(name)
        events = self.manager.events.of(cluster.name)
        self.write_json({"events": [e.to_dict() for e in events]})


# The most lines one logs request returns.
MAX_LOG_LINES = 1000


class LogsHandler(_OwnerOnlyHandler):
    """``GET api/v1/clusters/<name>/logs?process=scheduler|<worker>&tail=N``."""

    async def get(self, name):
        cluster = self.owned_cluster(name)
        process = self.get_query_argument("process", "scheduler")
        raw = self.get_query_argument("tail", "100")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LOG_LINES:
            raise BadRequest(f"tail must be an integer from 1 to {MAX_LOG_LINES}")
        worker = None
        if process != "scheduler":
            worker = cluster.workers.get(process)
            if worker is None:
                raise NotFound(f"Cluster {name} has no process {process!r}")
        text = await self.gateway.backend.log_tail(cluster, worker, lines=int(raw))
        processes = [
            "scheduler",
            *sorted(cluster.workers, key=lambda w: cluster.workers[w].start_time),
        ]
        self.write_json({"process": process, "text": text, "processes": processes})


class HeartbeatHandler(BaseHandler):
    """``POST api/v1/clusters/<name>/heartbeat`` from the scheduler preload (cluster token)."""

    requires_user = False

    async def post(self, name):
        cluster = self.manager.clusters.get(name)
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if cluster is None or scheme != "token" or not same_secret(token.strip(), cluster.token):
            raise Forbidden("Invalid cluster token")
        # The reply tells the scheduler its target worker count and ceiling.
        self.write_json(await self.manager.heartbeat(cluster, parse_heartbeat(self.json_body())))


class RoutesHandler(BaseHandler):
    """``GET api/v1/routes?since=N``: the SNI table, long-polled by the proxy process."""

    requires_user = False

    async def get(self):
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme != "token" or not same_secret(token.strip(), self.gateway.proxy_token):
            raise Forbidden("Invalid proxy token")
        self.gateway.metrics.proxy_reported(self.request.headers.get(PROXY_STATS_HEADER))
        since = self.get_query_argument("since", None)
        if since is not None:
            try:
                since_v = int(since)
            except ValueError:
                raise BadRequest("since must be an integer") from None
            await self.manager.routes.wait_for_change(since_v, self.gateway.routes_poll_timeout)
        if self.request.connection.stream.closed():
            return
        self.write_json(self.manager.routes.snapshot())


class MetricsHandler(BaseHandler):
    """``GET metrics``: Prometheus metrics (``metrics.py``), for the metrics token, Hub
    tokens with ``read:metrics`` and admins (anyone with ``metrics_require_auth`` off)."""

    async def prepare(self):
        gateway = self.gateway
        if not gateway.metrics_require_auth:
            return
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if (
            gateway.metrics_token
            and scheme.lower() == "bearer"
            and same_secret(token.strip(), gateway.metrics_token)
        ):
            return
        # Anything else is a user's credentials (a Hub token may be Bearer too): none
        # is 401 with the challenge; a user without the right, 403.
        await super().prepare()
        if not may_read_metrics(self.current_user):
            raise Forbidden(f"Reading metrics needs admin rights or the {METRICS_SCOPE} scope")

    def get(self):
        self.set_header("Content-Type", METRICS_CONTENT_TYPE)
        self.finish(self.gateway.metrics.exposition())


class DashboardHandler(BaseHandler, DashboardProxyHandler):
    """``clusters/<name>/...``: the scheduler's dashboard, for users who may see the cluster."""

    serves_pages = True

    def check_xsrf_cookie(self):
        # The dashboard's own pages read it with the viewer's cookie (bokeh's requests
        # carry no XSRF token); its policy keeps them to this cluster's prefix. Anything
        # that could change state still needs the Hub's XSRF token.
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            super().check_xsrf_cookie()

    def frame_ancestors(self):
        # Embedded pages (dask-labextension's panes) can script the page that embeds them:
        # only the owner's own pages, which run only the owner's code, may embed them.
        cluster = self._cluster
        if cluster is not None and cluster.username == self.current_user.name:
            return "'self'"
        return "'none'"

    async def prepare(self):
        try:
            await BaseHandler.prepare(self)
        except Unauthorized:
            # Pages go to the Hub login; a websocket cannot follow a redirect: 401.
            upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
            login = None if upgrade else self.gateway.authenticator.login_url(self)
            if login and self.request.method in ("GET", "HEAD"):
                self.redirect(login)
                return
            raise
        await DashboardProxyHandler.prepare(self)

    # The cluster this request's dashboard belongs to, once resolve_dashboard found it.
    _cluster = None
    _dashboard_key = ""

    async def resolve_dashboard(self, cluster_name):
        cluster = self.manager.get(cluster_name)
        if not self.current_user.may_view(cluster):
            # Unlike the API (where other users' clusters are invisible), a dashboard URL
            # is something users pass around: say plainly that it isn't theirs to open.
            raise Forbidden(f"User {self.current_user.name} may not view cluster {cluster_name}")
        if cluster.public_status != ClusterStatus.RUNNING or not cluster.dashboard_address:
            raise NotFound(f"Cluster {cluster_name} has no running dashboard")
        self._dashboard_key = dashboard_key(cluster.token)
        self._cluster = cluster
        return cluster.dashboard_address

    def upstream_headers(self):
        if not self._dashboard_key:
            return {}
        # The scheduler serves only requests with its key (scheduler_preload.py).
        return {DASHBOARD_KEY_HEADER: self._dashboard_key}


def default_handlers(prefix: str):
    p = prefix
    return [
        (p + r"api/version", VersionHandler),
        (p + r"api/health", HealthHandler),
        (p + r"api/v1/clusters/?", ClustersHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/heartbeat", HeartbeatHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/scale", ScaleHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/adapt", AdaptHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/events", EventsHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/logs", LogsHandler),
        (p + r"api/v1/clusters/(?P<name>[^/]+)/?", ClusterHandler),
        (p + r"api/v1/cluster-details/?", ClusterDetailsHandler),
        (p + r"api/v1/cluster-details/(?P<name>[^/]+)/?", ClusterDetailsHandler),
        (p + r"api/v1/options/?", OptionsHandler),
        (p + r"api/v1/whoami/?", WhoAmIHandler),
        (p + r"api/v1/routes/?", RoutesHandler),
        (p + r"metrics", MetricsHandler),
        (p + r"clusters/(?P<cluster_name>[^/]+)(?P<path>/.*)?", DashboardHandler),
    ]
