"""HTTP calls from the user's Jupyter server to the gateway, and what the browser may see.

``GatewayClient`` is the only code in the server extension that talks to the gateway: it
adds the server's credentials, turns every failure into a ``RelayError`` whose message a
user can act on, and leaves retries to the panel's poll. ``panel_cluster`` builds the
cluster record the panel receives from an allow-list of fields (``panel_event`` and
``panel_logs`` do the same for a cluster's events and log tails), so TLS keys and
anything the gateway adds later never reach the browser by accident.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError

SUPPORTED_AUTH = ("jupyterhub", "basic", "none")


class RelayError(web.HTTPError):
    """A failed relay call: ``status`` for the browser and a message it shows as is."""

    def __init__(self, status: int, message: str):
        # no log_message: tornado would %-format it, and gateway messages may contain '%'
        super().__init__(status)
        self.error = message

    def __str__(self):
        return f"{self.status_code}: {self.error}"


def _error_text(body: bytes) -> str:
    """The gateway's ``{"error": ...}`` message, or the start of whatever it sent."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return data[key]
    return text[:300]


def dashboard_url(route: str | None, public_address: str | None) -> str | None:
    """Where a browser opens a cluster's dashboard: the gateway's route under its public URL.

    Routes come either relative to the gateway (``/clusters/<name>/status``, what the
    dask-gateway client expects) or already under the Hub's service prefix
    (``/services/dask-gateway/clusters/...``); the prefix must not be doubled.
    """
    if not route:
        return None
    if urlsplit(route).scheme:
        return route
    public = (public_address or "").rstrip("/")
    prefix = urlsplit(public).path.rstrip("/")
    if prefix and (route == prefix or route.startswith(prefix + "/")):
        return public[: len(public) - len(prefix)] + route
    return public + route


def _number(value, kind):
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def panel_cluster(raw: dict, public_address: str | None, now: float | None = None) -> dict:
    """The browser's view of one cluster, from a cluster-details (or plain cluster) record.

    Counts are None when the gateway does not report them (a plain dask-gateway server).
    """
    now = time.time() if now is None else now
    start = _number(raw.get("start_time"), float)
    stop = _number(raw.get("stop_time"), float)
    adaptive = raw.get("adaptive")
    if isinstance(adaptive, dict):
        adaptive = {
            "minimum": _number(adaptive.get("minimum"), int),
            "maximum": _number(adaptive.get("maximum"), int),
        }
    else:
        adaptive = None
    end = stop / 1000 if stop else now
    return {
        "name": str(raw.get("name", "")),
        "owner": raw.get("owner") if isinstance(raw.get("owner"), str) else None,
        "status": str(raw.get("status", "")).upper(),
        "start_time": start,
        "stop_time": stop,
        "age": max(0.0, end - start / 1000) if start else None,
        "options": raw.get("options") if isinstance(raw.get("options"), dict) else {},
        "dashboard_url": dashboard_url(raw.get("dashboard_route"), public_address),
        "workers": _number(raw.get("workers"), int),
        "target_workers": _number(raw.get("target_workers"), int),
        "threads": _number(raw.get("threads"), int),
        "cores": _number(raw.get("cores"), float),
        "memory": _number(raw.get("memory"), int),
        "adaptive": adaptive,
        "shared_groups": [g for g in raw.get("shared_groups") or [] if isinstance(g, str)],
        "reason": raw.get("reason") if isinstance(raw.get("reason"), str) else "",
    }


def panel_event(raw: dict) -> dict:
    """One event of a cluster's history, from an allow-list of fields."""
    worker = raw.get("worker")
    return {
        "time": _number(raw.get("time"), int),
        "kind": str(raw.get("kind", "")),
        "message": str(raw.get("message", "")),
        "worker": worker if isinstance(worker, str) else None,
    }


def panel_logs(raw: dict, process: str) -> dict:
    """A log tail as the panel shows it: the process, its text and the processes with logs."""
    text = raw.get("text")
    return {
        "process": raw.get("process") if isinstance(raw.get("process"), str) else process,
        "text": text if isinstance(text, str) else "",
        "processes": [p for p in raw.get("processes") or [] if isinstance(p, str)],
    }


class GatewayClient:
    """Calls the gateway's REST API (docs/protocol.md, plus ``cluster-details``) for one user.

    Parameters
    ----------
    address : str or None
        Base URL of the gateway API (``.../services/dask-gateway``); None when unconfigured.
    auth_type : str
        'jupyterhub', 'basic' or 'none'.
    api_token : str
        The server's JupyterHub API token, sent as ``Authorization: token ...``.
    basic_username, basic_password : str
        Credentials for 'basic'.
    public_address : str or None
        Root of dashboard links for the browser.
    timeout : float
        Seconds per request.
    validate_cert : bool
        Verify TLS certificates of an https gateway.
    under_hub : bool
        Whether JupyterHub started this server (only changes error messages).
    """

    def __init__(
        self,
        address,
        auth_type="jupyterhub",
        api_token="",
        basic_username="",
        basic_password="",
        public_address=None,
        timeout=30.0,
        validate_cert=True,
        under_hub=False,
    ):
        self.address = address.rstrip("/") if address else None
        self.auth_type = auth_type
        self._api_token = api_token
        self._basic = (basic_username, basic_password)
        self.public_address = public_address
        self.timeout = timeout
        self.validate_cert = validate_cert
        self.under_hub = under_hub
        # None until the first list call tells us whether the gateway has cluster-details
        self._has_details: bool | None = None

    def problem(self) -> str | None:
        """Why this server cannot call the gateway at all, or None."""
        if not self.address:
            return (
                "No Dask Gateway is configured for this Jupyter server. Under JupyterHub, "
                "jupyterhub_dask_gateway.configure_jupyterhub() sets DASK_GATEWAY__ADDRESS; "
                "otherwise set c.DaskGatewayExtension.address."
            )
        if self.auth_type not in SUPPORTED_AUTH:
            return (
                f"The panel cannot authenticate with auth type {self.auth_type!r}; use "
                "'jupyterhub', 'basic' or 'none' (c.DaskGatewayExtension.auth_type)."
            )
        if self.auth_type == "jupyterhub" and not self._api_token:
            return (
                "This Jupyter server has no JupyterHub API token (JUPYTERHUB_API_TOKEN), so it "
                "cannot call the Dask Gateway for you. Start the server from JupyterHub, or set "
                "c.DaskGatewayExtension.auth_type to 'basic' for a standalone gateway."
            )
        return None

    def _headers(self) -> dict:
        headers = {"Accept": "application/json"}
        if self.auth_type == "jupyterhub":
            headers["Authorization"] = f"token {self._api_token}"
        elif self.auth_type == "basic":
            raw = ":".join(self._basic).encode("latin-1", "replace")
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return headers

    async def request(self, method: str, path: str, body=None, query=None) -> Any:
        """One call to ``{address}/{path}``; the decoded JSON reply, or None for no body."""
        problem = self.problem()
        if problem:
            raise RelayError(503, problem)
        url = f"{self.address}/{path}"
        if query:
            url += "?" + urlencode(query)
        headers = self._headers()
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = b""
        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=payload,
            connect_timeout=min(10.0, self.timeout),
            request_timeout=self.timeout,
            follow_redirects=False,
            validate_cert=self.validate_cert,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPTimeoutError:
            raise RelayError(
                504, f"The Dask Gateway at {self.address} did not answer within {self.timeout:g} s."
            ) from None
        except (OSError, StreamClosedError, HTTPClientError) as e:
            raise RelayError(502, f"Cannot reach the Dask Gateway at {self.address}: {e}") from None
        return self._reply(response)

    def _reply(self, response) -> Any:
        code = response.code
        if 200 <= code < 300:
            if not response.body:
                return None
            try:
                return json.loads(response.body)
            except ValueError:
                raise RelayError(
                    502, f"The Dask Gateway at {self.address} sent a reply that is not JSON."
                ) from None
        if 300 <= code < 400:
            raise RelayError(
                502,
                f"The Dask Gateway at {self.address} redirected to "
                f"{response.headers.get('Location', '?')}; is the address right, and may this "
                "server's token use the service?",
            )
        message = _error_text(response.body or b"")
        if code == 401:
            hint = (
                " The server's token needs the scope access:services!service=dask-gateway "
                "(configure_jupyterhub() grants it; restart your server after the Hub "
                "configuration changed)."
                if self.auth_type == "jupyterhub"
                else ""
            )
            raise RelayError(403, f"The Dask Gateway rejected this server's credentials.{hint}")
        if code == 503:
            raise RelayError(503, f"The Dask Gateway is unavailable: {message}")
        if code >= 500:
            raise RelayError(502, f"The Dask Gateway failed ({code}): {message}")
        # 400, 403, 404, 409, 422 ...: the gateway's own words are the best explanation
        raise RelayError(code, message or f"The Dask Gateway answered {code}")

    # The calls the panel needs; names are quoted so a crafted one cannot change the path.

    async def list_clusters(self, all_users=False, statuses: str | None = None) -> list[dict]:
        """The clusters the panel lists: ``all_users`` for an admin's view of everyone's,
        ``statuses`` a comma-separated filter (the gateway's default: the active ones)."""
        raws = None
        if self._has_details is not False:
            query = {}
            if all_users:
                query["all"] = "1"
            if statuses:
                query["status"] = statuses
            try:
                reply = await self.request("GET", "api/v1/cluster-details/", query=query or None)
                raws = reply.get("clusters", []) if isinstance(reply, dict) else []
                self._has_details = True
            except RelayError as e:
                if e.status_code != 404 or self._has_details:
                    raise
                # a plain dask-gateway server: list without worker counts
                self._has_details = False
        if raws is None:
            reply = await self.request(
                "GET", "api/v1/clusters/", query={"status": statuses or "PENDING,RUNNING,STOPPING"}
            )
            raws = list(reply.values()) if isinstance(reply, dict) else []
        now = time.time()
        return [panel_cluster(r, self.public_address, now) for r in raws if isinstance(r, dict)]

    async def get_cluster(self, name: str) -> dict:
        path = "cluster-details" if self._has_details is not False else "clusters"
        try:
            raw = await self.request("GET", f"api/v1/{path}/{quote(name, safe='')}")
        except RelayError as e:
            if path != "cluster-details" or e.status_code != 404 or self._has_details:
                raise
            raw = await self.request("GET", f"api/v1/clusters/{quote(name, safe='')}")
        return panel_cluster(raw or {}, self.public_address)

    async def create_cluster(self, options: dict) -> str:
        reply = await self.request("POST", "api/v1/clusters/", body={"cluster_options": options})
        return reply["name"]

    async def scale(self, name: str, count: int) -> dict:
        reply = await self.request(
            "POST", f"api/v1/clusters/{quote(name, safe='')}/scale", body={"count": count}
        )
        return _ok_reply(reply)

    async def adapt(self, name: str, minimum, maximum, active=True) -> dict:
        reply = await self.request(
            "POST",
            f"api/v1/clusters/{quote(name, safe='')}/adapt",
            body={"minimum": minimum, "maximum": maximum, "active": active},
        )
        return _ok_reply(reply)

    async def stop(self, name: str) -> None:
        await self.request("DELETE", f"api/v1/clusters/{quote(name, safe='')}")

    async def events(self, name: str) -> list[dict]:
        """The cluster's history, oldest first (owner and admins only)."""
        reply = await self.request("GET", f"api/v1/clusters/{quote(name, safe='')}/events")
        raws = reply.get("events") if isinstance(reply, dict) else None
        return [panel_event(r) for r in raws or [] if isinstance(r, dict)]

    async def logs(self, name: str, process: str, tail: int) -> dict:
        """The last ``tail`` lines of one of the cluster's processes, and which have logs."""
        reply = await self.request(
            "GET",
            f"api/v1/clusters/{quote(name, safe='')}/logs",
            query={"process": process, "tail": str(tail)},
        )
        return panel_logs(reply if isinstance(reply, dict) else {}, process)

    async def options(self) -> list:
        reply = await self.request("GET", "api/v1/options")
        return reply.get("cluster_options", []) if isinstance(reply, dict) else []

    async def whoami(self) -> dict | None:
        """The gateway's view of our identity (name, groups, admin); None if it cannot say."""
        try:
            reply = await self.request("GET", "api/v1/whoami")
        except RelayError as e:
            if e.status_code == 404:  # a plain dask-gateway server has no such route
                return None
            raise
        return reply if isinstance(reply, dict) else None

    async def version(self) -> str | None:
        reply = await self.request("GET", "api/version")
        return reply.get("version") if isinstance(reply, dict) else None


def _ok_reply(reply) -> dict:
    """Scale and adapt answer ``{"ok", "msg"}`` (a warning when a limit clamped the request)."""
    if isinstance(reply, dict):
        return {"ok": bool(reply.get("ok", True)), "msg": reply.get("msg")}
    return {"ok": True, "msg": None}
