"""The relay the JupyterLab panel calls, under ``<base_url>dask-gateway/``.

Each handler checks who is asking (jupyter_server's own login and authorizer), validates
the request body, and makes one call through ``gateway.GatewayClient``, which carries the
server's Hub token. No handler keeps state or decides policy: the gateway enforces who may
see and manage which cluster. Errors are rendered once, as ``{"error": message}``.

Routes (relative to the server's base URL)::

    GET    dask-gateway/config[?check=1]        what the panel needs to start: settings, the
                                                 gateway's view of the user, (its version)
    GET    dask-gateway/options                 the admin's cluster options spec
    GET    dask-gateway/clusters[?all=1][&status=RUNNING,FAILED,...]
                                                 clusters with workers, cores, memory, dashboard
    POST   dask-gateway/clusters                 {"cluster_options": {...}} -> 201 {"name"}
    GET    dask-gateway/clusters/<name>          one cluster
    DELETE dask-gateway/clusters/<name>          stop it -> 204
    POST   dask-gateway/clusters/<name>/scale    {"count": n}
    POST   dask-gateway/clusters/<name>/adapt    {"minimum": a, "maximum": b}
    GET    dask-gateway/clusters/<name>/events   {"events": [{time, kind, message, worker}]}
    GET    dask-gateway/clusters/<name>/logs?process=scheduler|<worker>&tail=<1..1000>
                                                 {"process", "text", "processes"}
"""

from __future__ import annotations

import json
import re

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .gateway import RelayError

NAME = r"(?P<name>[^/]+)"
# what the gateway generates (uuid4().hex); the routes that reach a cluster's processes
# check names before anything is sent on
CLUSTER_NAME = re.compile(r"[0-9a-f]{32}")
PROCESS_NAME = re.compile(r"scheduler|[0-9a-f]{1,64}")
STATUSES = ("PENDING", "RUNNING", "STOPPING", "STOPPED", "FAILED")
MAX_TAIL = 1000


def _cluster_name(name: str) -> str:
    if not CLUSTER_NAME.fullmatch(name):
        raise RelayError(400, f"{json.dumps(name)} is not a cluster name (32 hex characters)")
    return name


def _statuses(raw: str | None) -> str | None:
    """A comma-separated status filter, checked and normalized (None: the gateway's default)."""
    if raw is None:
        return None
    parts = [p.strip().upper() for p in raw.split(",") if p.strip()]
    bad = [p for p in parts if p not in STATUSES]
    if bad or not parts:
        raise RelayError(400, f"status must be a comma-separated list of {', '.join(STATUSES)}")
    return ",".join(parts)


def _count(value, field, allow_none=False):
    """A non-negative int from JSON (bools are ints in Python, but not counts)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        expected = "a non-negative integer" + (" or null" if allow_none else "")
        raise RelayError(400, f"{field} must be {expected}, got {json.dumps(value)}")
    return value


class RelayHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every relay route: JSON in and out, errors as ``{"error": message}``."""

    # the authorizer sees this resource name; jupyterhub's allows it to anyone who may
    # use the server, stricter authorizers can single it out
    auth_resource = "dask-gateway"

    @property
    def gateway(self):
        return self.extensionapp.gateway

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise RelayError(400, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RelayError(400, "The request body must be a JSON object")
        return body

    def write_json(self, data, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, RelayError):
            message = exc.error
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or exc.reason or self._reason
            if exc.log_message and exc.args:
                message = exc.log_message % exc.args
        else:
            # a bug in the relay: the traceback goes to the server log, not the browser
            message = "Internal error in the Dask Gateway server extension; see the server log"
        self.set_header("Content-Type", "application/json")
        # "message" too, so JupyterLab's ServerConnection.ResponseError shows it
        self.finish(json.dumps({"error": message, "message": message}))


class ConfigHandler(RelayHandler):
    """What the panel needs before its first list, and whether the gateway answers.

    ``user`` and ``admin`` are the gateway's view of who we are (they differ from the
    Jupyter user on a standalone gateway); ``?check=1`` adds the gateway's version.
    """

    @web.authenticated
    @authorized
    async def get(self):
        gateway = self.gateway
        user = self.current_user
        reply = {
            "configured": gateway.problem() is None,
            "problem": gateway.problem(),
            "address": gateway.address,
            "public_address": gateway.public_address,
            "proxy_address": self.extensionapp.proxy_address,
            "auth_type": gateway.auth_type,
            "under_hub": gateway.under_hub,
            "user": getattr(user, "username", None) or getattr(user, "name", None),
            "admin": False,
            "version": _version(),
        }
        if reply["configured"]:
            try:
                identity = await gateway.whoami()
                if identity:
                    reply["user"] = identity.get("name", reply["user"])
                    reply["admin"] = bool(identity.get("admin"))
                if self.get_query_argument("check", "0") == "1":
                    reply["gateway_version"] = await gateway.version()
            except RelayError as e:
                reply["gateway_error"] = e.error
        self.write_json(reply)


class OptionsHandler(RelayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json({"cluster_options": await self.gateway.options()})


class ClustersHandler(RelayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        all_users = self.get_query_argument("all", "0") in ("1", "true")
        statuses = _statuses(self.get_query_argument("status", None))
        clusters = await self.gateway.list_clusters(all_users=all_users, statuses=statuses)
        self.write_json({"clusters": clusters})

    @web.authenticated
    @authorized
    async def post(self):
        options = self.json_body().get("cluster_options") or {}
        if not isinstance(options, dict):
            raise RelayError(400, "cluster_options must be a JSON object")
        name = await self.gateway.create_cluster(options)
        self.write_json({"name": name}, status=201)


class ClusterHandler(RelayHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(await self.gateway.get_cluster(name))

    @web.authenticated
    @authorized
    async def delete(self, name):
        await self.gateway.stop(name)
        self.set_status(204)
        self.finish()


class ScaleHandler(RelayHandler):
    @web.authenticated
    @authorized
    async def post(self, name):
        count = _count(self.json_body().get("count"), "count")
        self.write_json(await self.gateway.scale(name, count))


class AdaptHandler(RelayHandler):
    @web.authenticated
    @authorized
    async def post(self, name):
        body = self.json_body()
        minimum = _count(body.get("minimum"), "minimum", allow_none=True)
        maximum = _count(body.get("maximum"), "maximum", allow_none=True)
        if minimum is not None and maximum is not None and minimum > maximum:
            raise RelayError(400, f"minimum ({minimum}) must not exceed maximum ({maximum})")
        active = body.get("active", True)
        if not isinstance(active, bool):
            raise RelayError(400, "active must be true or false")
        self.write_json(await self.gateway.adapt(name, minimum, maximum, active))


class EventsHandler(RelayHandler):
    """A cluster's history (its owner and admins only: the gateway decides)."""

    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json({"events": await self.gateway.events(_cluster_name(name))})


class LogsHandler(RelayHandler):
    """The last lines of the scheduler's or a worker's log."""

    @web.authenticated
    @authorized
    async def get(self, name):
        name = _cluster_name(name)
        process = self.get_query_argument("process", "scheduler")
        if not PROCESS_NAME.fullmatch(process):
            raise RelayError(400, "process must be 'scheduler' or a worker name")
        raw_tail = self.get_query_argument("tail", "100")
        tail = int(raw_tail) if re.fullmatch(r"[0-9]{1,4}", raw_tail) else 0
        if not 1 <= tail <= MAX_TAIL:
            raise RelayError(400, f"tail must be a whole number from 1 to {MAX_TAIL}")
        self.write_json(await self.gateway.logs(name, process, tail))


def _version():
    from . import __version__

    return __version__


default_handlers = [
    (r"dask-gateway/config/?", ConfigHandler),
    (r"dask-gateway/options/?", OptionsHandler),
    (r"dask-gateway/clusters/?", ClustersHandler),
    (rf"dask-gateway/clusters/{NAME}/scale/?", ScaleHandler),
    (rf"dask-gateway/clusters/{NAME}/adapt/?", AdaptHandler),
    (rf"dask-gateway/clusters/{NAME}/events/?", EventsHandler),
    (rf"dask-gateway/clusters/{NAME}/logs/?", LogsHandler),
    (rf"dask-gateway/clusters/{NAME}/?", ClusterHandler),
]
