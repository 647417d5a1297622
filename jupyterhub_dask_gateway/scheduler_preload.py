"""Runs inside every scheduler (``--preload jupyterhub_dask_gateway.scheduler_preload``).

It owns the scheduler's side of the gateway protocol:

* heartbeats to ``POST {DASK_GATEWAY_API_URL}/clusters/<name>/heartbeat`` (cluster
  token) carrying the scheduler's addresses, the target worker count and every
  worker with its threads and memory, so the gateway learns readiness and
  starts or stops workers;
* a small control API (``POST /api/comm``, cluster token) on which the gateway
  sends ``scale`` and ``adapt``;
* adaptive scaling (distributed's ``adaptive_target``) and the idle timeout,
  which asks the gateway to stop the cluster;
* with ``JHDG_HANDOFF_SOCKET`` set (local backend), a unix socket on which the
  gateway's proxy passes client connections it has routed here, so their bytes
  skip the proxy (``proxy/handoff.py``);
* a lock on the scheduler's HTTP server (dashboard and HTTP routes): only
  requests carrying the cluster's dashboard key, which the gateway's dashboard
  proxy adds, are served, so other local accounts cannot use its port directly.

Workers are started by the gateway's backend with names the gateway chose; this
module only decides how many and which ones retire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from urllib.parse import urlparse

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.routing import Matcher, Rule
from tornado.web import Application, HTTPError, RequestHandler

from .proxy.handoff import HandoffReceiver
from .utils import DASHBOARD_KEY_HEADER, dashboard_key, same_secret

logger = logging.getLogger("jupyterhub_dask_gateway.scheduler")


def listener_adopter(scheduler):
    """``adopt(sock, peer)`` feeding a socket to the scheduler's TLS listener, or None.

    It treats the socket exactly as the listener's own accept would (TLS
    handshake, distributed's comm handshake). Tornado's TCPServer has no public
    method for that; if its private one goes away, the proxy just splices.
    """
    if not scheduler.listeners:
        return None
    tcp_server = getattr(scheduler.listeners[0], "tcp_server", None)
    adopt = getattr(tcp_server, "_handle_connection", None)
    if adopt is None or getattr(tcp_server, "ssl_options", None) is None:
        return None
    return adopt


class _WithoutKey(Matcher):
    """Matches every request that does not carry the dashboard key."""

    def __init__(self, key: str):
        self.key = key

    def match(self, request):
        return None if same_secret(request.headers.get(DASHBOARD_KEY_HEADER, ""), self.key) else {}


class _Refused(RequestHandler):
    """403 for any method. Not an ``ErrorHandler``: distributed's RoutingApplication
    passes those over and asks its sub-applications (bokeh) instead."""

    def prepare(self):
        raise HTTPError(403)


def require_dashboard_key(http_application, key: str) -> None:
    """Answer 403 to every request without ``key``, ahead of all routes (bokeh's too)."""
    http_application.default_router.rules.insert(0, Rule(_WithoutKey(key), _Refused))


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class GatewaySchedulerPlugin(SchedulerPlugin):
    """Keeps the gateway informed and applies its scale/adapt decisions."""

    name = "jupyterhub-dask-gateway"

    def __init__(
        self,
        scheduler,
        api_url,
        token,
        cluster_name,
        heartbeat_period,
        adaptive_period,
        idle_timeout,
        handoff_socket="",
        handoff_peer_uids=(),
        api_port=0,
    ):
        self.scheduler = scheduler
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.cluster_name = cluster_name
        self.heartbeat_period = heartbeat_period
        self.adaptive_period = adaptive_period
        self.idle_timeout = idle_timeout
        # The target worker count; the gateway owns it and says so in each heartbeat's
        # reply, with the ceiling adaptive scaling must stay under (quota, limits).
        self.count = 0
        self.max_workers: int | None = None
        self.adaptive: dict | None = None
        self._scale_down_window: list[int] = []
        self.closing: set[str] = set()
        self.closed: set[str] = set()
        self.api_address = ""
        self.api_port = api_port  # 0: a free one; a pod's fixed container port otherwise
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._http = AsyncHTTPClient(force_instance=True)
        self._server = None
        self.handoff_socket = handoff_socket
        self.handoff_peer_uids = set(handoff_peer_uids)
        self._handoff: HandoffReceiver | None = None

    # --- scheduler plugin hooks ---------------------------------------------------------
    def add_worker(self, scheduler=None, worker=None):
        self._wake.set()

    def remove_worker(self, scheduler=None, worker=None, **kwargs):
        ws = self.scheduler.workers.get(worker)
        name = ws.name if ws is not None else None
        if name is None:
            name = self._names.pop(worker, None)
        if name is not None:
            self.closed.add(str(name))
            self.closing.discard(str(name))
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------
    async def launch(self):
        self._names: dict[str, str] = {}
        host = urlparse(self.scheduler.address.replace("tls://", "http://")).hostname
        app = Application(
            [(r"/api/comm", _CommHandler, {"plugin": self}), (r"/api/health", _HealthHandler)]
        )
        sockets = bind_sockets(self.api_port, address=host)
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        self.api_address = f"http://{host}:{port}"
        if self.handoff_socket:
            self._start_handoff()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop())]
        if self.idle_timeout > 0:
            self._tasks.append(loop.create_task(self._idle_loop()))

    async def close(self):
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            self._server.stop()
        if self._handoff is not None:
            self._handoff.stop()
            self._handoff = None

    def _start_handoff(self):
        adopt = listener_adopter(self.scheduler)
        if adopt is None:
            logger.warning("Connection hand-off unavailable: not a tornado TLS listener")
            return
        receiver = HandoffReceiver(
            self.handoff_socket, adopt, peer_uids={os.getuid(), *self.handoff_peer_uids}
        )
        try:
            receiver.start()
        except OSError as e:
            logger.warning("Connection hand-off unavailable: %s", e)
            return
        self._handoff = receiver

    # --- gateway operations -------------------------------------------------------------
    def scale(self, count: int):
        self.adaptive = None
        self._set_count(count)

    def adapt(self, minimum: int, maximum: int, active: bool = True):
        if not active:
            self.adaptive = None
            return
        self.adaptive = {"minimum": minimum, "maximum": maximum}
        self._scale_down_window.clear()
        loop = asyncio.get_running_loop()
        if not any(t.get_name() == "adapt" and not t.done() for t in self._tasks):
            self._tasks.append(loop.create_task(self._adaptive_loop(), name="adapt"))
        self._adapt_once()

    def _set_count(self, count: int):
        count = max(0, int(count))
        changed = count != self.count
        self.count = count
        names = self._worker_names()
        excess = len(names) - len(self.closing) - count
        if excess > 0:
            candidates = self.scheduler.workers_to_close(
                n=excess + len(self.closing), attribute="name"
            )
            for name in candidates:
                if len(self.closing) >= len(names) - count:
                    break
                self.closing.add(str(name))
        if changed or excess > 0:
            self._wake.set()

    def _worker_names(self) -> list[str]:
        names = []
        for addr, ws in self.scheduler.workers.items():
            self._names[addr] = str(ws.name)
            names.append(str(ws.name))
        return names

    # --- loops --------------------------------------------------------------------------
    def heartbeat_body(self) -> dict:
        workers = {}
        for addr, ws in self.scheduler.workers.items():
            name = str(ws.name)
            self._names[addr] = name
            if name in self.closing:
                continue
            workers[name] = {"nthreads": ws.nthreads, "memory_limit": ws.memory_limit}
        dashboard = ""
        if "dashboard" in self.scheduler.services:
            host = urlparse(self.scheduler.address.replace("tls://", "http://")).hostname
            dashboard = f"http://{host}:{self.scheduler.services['dashboard'].port}"
        return {
            "scheduler_address": self.scheduler.address,
            "dashboard_address": dashboard,
            "api_address": self.api_address,
            "count": self.count,
            "adaptive": self.adaptive,
            "workers": workers,
            "closing_workers": sorted(self.closing),
            "closed_workers": sorted(self.closed),
            "handoff": self._handoff is not None,
        }

    async def _send_heartbeat(self):
        body = self.heartbeat_body()
        req = HTTPRequest(
            f"{self.api_url}/clusters/{self.cluster_name}/heartbeat",
            method="POST",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body),
            request_timeout=10,
        )
        resp = await self._http.fetch(req)
        # The gateway has recorded these departures: reporting them again would only
        # grow every later heartbeat (a long adaptive run sees thousands of workers go).
        self.closed.difference_update(body["closed_workers"])
        self.apply_reply(resp.body)
        # Retire only after the gateway knows these workers are leaving on purpose.
        to_retire = [
            a for a, n in self._names.items() if n in self.closing and a in self.scheduler.workers
        ]
        if to_retire:
            asyncio.get_running_loop().create_task(
                self.scheduler.retire_workers(
                    workers=to_retire,
                    close_workers=True,
                    remove=True,
                    stimulus_id="gateway-scale-down",
                )
            )

    def apply_reply(self, body: bytes) -> None:
        """The gateway's answer to a heartbeat: its target count and the ceiling."""
        try:
            reply = json.loads(body) if body else {}
        except ValueError:
            return
        if not isinstance(reply, dict):
            return
        ceiling = reply.get("max_workers")
        if ceiling is None or (isinstance(ceiling, int) and ceiling >= 0):
            self.max_workers = ceiling
        count = reply.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count != self.count:
            self._set_count(count)

    async def _heartbeat_loop(self):
        delay = 0.0
        backoff = 0.25
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._send_heartbeat()
                backoff = 0.25
                delay = self.heartbeat_period
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Heartbeat to the gateway failed: %s", exc)
                delay = backoff
                backoff = min(backoff * 2, self.heartbeat_period)

    def _adapt_once(self):
        if not self.adaptive:
            return
        lo, hi = self.adaptive["minimum"], self.adaptive["maximum"]
        if self.max_workers is not None:
            hi = min(hi, self.max_workers)
            lo = min(lo, hi)
        target = self.scheduler.adaptive_target()
        target = max(lo, min(hi, target))
        self._scale_down_window = (self._scale_down_window + [target])[-3:]
        if target >= self.count:
            self._set_count(target)
        else:
            self._set_count(max(self._scale_down_window))

    async def _adaptive_loop(self):
        while self.adaptive:
            await asyncio.sleep(self.adaptive_period)
            try:
                self._adapt_once()
            except Exception:
                logger.exception("Adaptive scaling failed")

    async def _idle_loop(self):
        period = max(self.idle_timeout / 4, 0.25)
        while True:
            await asyncio.sleep(period)
            idle_since = self.scheduler.check_idle()
            if idle_since is not None and time.time() - idle_since > self.idle_timeout:
                logger.info(
                    "Idle for %.0f s, asking the gateway to stop the cluster", self.idle_timeout
                )
                try:
                    await self._http.fetch(
                        HTTPRequest(
                            f"{self.api_url}/clusters/{self.cluster_name}",
                            method="DELETE",
                            headers={"Authorization": f"token {self.token}"},
                            request_timeout=10,
                        )
                    )
                except Exception as exc:
                    logger.warning("Idle shutdown request failed: %s", exc)


class _CommHandler(RequestHandler):
    def initialize(self, plugin):
        self.plugin = plugin

    def check_xsrf_cookie(self):
        pass

    def post(self):
        if not same_secret(
            self.request.headers.get("Authorization", ""), f"token {self.plugin.token}"
        ):
            raise HTTPError(403)
        try:
            msg = json.loads(self.request.body)
            op = msg["op"]
            if op == "scale":
                self.plugin.scale(int(msg["count"]))
            elif op == "adapt":
                self.plugin.adapt(
                    int(msg["minimum"]), int(msg["maximum"]), bool(msg.get("active", True))
                )
            else:
                raise HTTPError(422, "op must be one of {scale, adapt}")
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPError(422, str(exc)) from None
        self.set_status(204)


class _HealthHandler(RequestHandler):
    def get(self):
        self.write({"status": "pass"})


async def dask_setup(scheduler):
    try:
        api_url = os.environ["DASK_GATEWAY_API_URL"]
        token = os.environ["DASK_GATEWAY_API_TOKEN"]
        name = os.environ["DASK_GATEWAY_CLUSTER_NAME"]
    except KeyError as exc:
        raise SystemExit(f"jupyterhub_dask_gateway preload: {exc.args[0]} is not set") from None
    if "/" in token and os.path.exists(token):
        with open(token) as f:
            token = f.read().strip()
    require_dashboard_key(scheduler.http_application, dashboard_key(token))
    peer_uid = os.environ.get("JHDG_HANDOFF_PEER_UID", "")
    plugin = GatewaySchedulerPlugin(
        scheduler,
        api_url,
        token,
        name,
        heartbeat_period=_env_float("JHDG_HEARTBEAT_PERIOD", 15),
        adaptive_period=_env_float("JHDG_ADAPTIVE_PERIOD", 3),
        idle_timeout=_env_float("JHDG_IDLE_TIMEOUT", 0),
        handoff_socket=os.environ.get("JHDG_HANDOFF_SOCKET", ""),
        handoff_peer_uids=[int(peer_uid)] if peer_uid.isdigit() else [],
        api_port=int(_env_float("JHDG_API_PORT", 0)),
    )
    scheduler.add_plugin(plugin)
    await plugin.launch()
