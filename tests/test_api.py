"""The REST API at the HTTP level: protocol details, bad input, authentication."""

import base64
import http.client
import json
import socket
import ssl

import pytest

from helpers import PASSWORD


def request(
    gw,
    method,
    path,
    body=None,
    user="alice",
    password=PASSWORD,
    headers=None,
    raw_body=None,
    via_proxy=True,
):
    port = gw.proxy_port if via_proxy else gw.api_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    hdrs = dict(headers or {})
    if user is not None:
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        hdrs["Authorization"] = f"Basic {cred}"
    data = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload
    return resp.status, parsed, resp


def test_version_and_health_need_no_auth(gateway):
    status, body, _ = request(gateway, "GET", "/api/version", user=None)
    assert status == 200 and "version" in body
    status, body, _ = request(gateway, "GET", "/api/health", user=None)
    assert status == 200 and body == {"status": "pass"}


def test_missing_credentials_get_401_with_challenge(gateway):
    for method, path in [
        ("GET", "/api/v1/clusters/"),
        ("POST", "/api/v1/clusters/"),
        ("GET", "/api/v1/options"),
        ("GET", "/api/v1/clusters/x"),
    ]:
        status, body, resp = request(gateway, method, path, user=None, body={})
        assert status == 401, (method, path)
        assert resp.getheader("WWW-Authenticate").startswith("Basic")
        assert "error" in body
    status, body, _ = request(gateway, "GET", "/api/v1/clusters/", password="wrong")
    assert status == 401 and body["error"] == "Invalid credentials"


def test_both_url_spellings_and_status_filter(gateway):
    assert request(gateway, "GET", "/api/v1/clusters")[0] == 200
    assert request(gateway, "GET", "/api/v1/clusters/")[0] == 200
    status, body, _ = request(gateway, "GET", "/api/v1/clusters/?status=bogus")
    assert status == 422 and body == {"error": "'bogus' is not a valid ClusterStatus"}
    status, body, _ = request(gateway, "GET", "/api/v1/clusters/?status=RUNNING,PENDING")
    assert status == 200 and body == {}


@pytest.mark.parametrize(
    "raw, status, fragment",
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "must be a JSON object"),
        ('{"cluster_options": 5}', 422, "must be a JSON object"),
        ('{"cluster_options": {"nope": 1}}', 422, "Unknown fields ['nope']"),
        ('{"cluster_options": {}, "extra": 1}', 400, "Unknown fields in request"),
        ('{"cluster_options": {"shared_groups": 5}}', 422, "shared_groups must be a string"),
    ],
)
def test_bad_create_bodies(gateway, raw, status, fragment):
    got, body, _ = request(gateway, "POST", "/api/v1/clusters/", raw_body=raw)
    assert got == status
    assert fragment in body["error"]
    assert request(gateway, "GET", "/api/v1/clusters/")[1] == {}


def test_huge_body_is_refused_and_gateway_keeps_serving(gateway):
    raw = '{"cluster_options": {"x": "' + "a" * (2 * 1024 * 1024) + '"}}'
    try:
        status, _, _ = request(gateway, "POST", "/api/v1/clusters/", raw_body=raw)
        assert 400 <= status < 500
    except (ConnectionError, http.client.HTTPException, OSError):
        pass  # closing the connection is an acceptable answer
    assert request(gateway, "GET", "/api/health", user=None)[0] == 200


def test_cluster_lifecycle_and_model_keys(gateway):
    status, body, _ = request(gateway, "POST", "/api/v1/clusters/", body={"cluster_options": {}})
    assert status == 201
    name = body["name"]
    assert len(name) == 32
    status, model, _ = request(gateway, "GET", f"/api/v1/clusters/{name}?wait")
    assert status == 200
    assert set(model) == {
        "name",
        "dashboard_route",
        "status",
        "start_time",
        "stop_time",
        "options",
        "tls_cert",
        "tls_key",
    }
    assert model["status"] == "RUNNING"
    assert model["tls_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert model["dashboard_route"] == f"/clusters/{name}/status"

    # Wrong types for scale and adapt: 422, state unchanged.
    for path, body in [
        ("scale", {"count": -1}),
        ("scale", {"count": "2"}),
        ("scale", {}),
        ("adapt", {"minimum": "x"}),
        ("adapt", {"minimum": 3, "maximum": 1}),
        ("adapt", {"active": "yes"}),
    ]:
        status, err, _ = request(gateway, "POST", f"/api/v1/clusters/{name}/{path}", body=body)
        assert status == 422, (path, body, err)
        assert "error" in err
    # Another user: invisible, cannot stop.
    assert request(gateway, "GET", f"/api/v1/clusters/{name}", user="bob")[0] == 404
    assert (
        request(gateway, "POST", f"/api/v1/clusters/{name}/scale", user="bob", body={"count": 1})[0]
        == 404
    )
    assert request(gateway, "DELETE", f"/api/v1/clusters/{name}", user="bob")[0] == 204
    assert request(gateway, "GET", f"/api/v1/clusters/{name}")[1]["status"] == "RUNNING"

    assert request(gateway, "DELETE", f"/api/v1/clusters/{name}")[0] == 204
    status, model, _ = request(gateway, "GET", f"/api/v1/clusters/{name}")
    assert model["status"] in ("STOPPING", "STOPPED")
    assert model["tls_key"] is None and model["tls_cert"] is None
    # Stopping again, or stopping an unknown cluster, is a no-op.
    assert request(gateway, "DELETE", f"/api/v1/clusters/{name}")[0] == 204
    assert request(gateway, "DELETE", "/api/v1/clusters/unknown")[0] == 204
    status, _, _ = request(gateway, "POST", f"/api/v1/clusters/{name}/scale", body={"count": 1})
    assert status in (409, 200) or status == 409


def test_heartbeat_and_routes_need_their_tokens(gateway):
    status, body, _ = request(
        gateway,
        "POST",
        "/api/v1/clusters/x/heartbeat",
        user=None,
        body={},
        headers={"Authorization": "token nope"},
    )
    assert status == 403
    status, body, _ = request(
        gateway, "GET", "/api/v1/routes", user=None, headers={"Authorization": "token nope"}
    )
    assert status == 403


def test_proxy_port_survives_garbage(gateway):
    """Random bytes, garbage and truncated TLS hellos: closed, and the API keeps serving."""
    payloads = [
        b"\x00\xff" * 100,
        b"\x16\x03\x01\x00",
        b"\x16\x03\x01\xff\xff" + b"A" * 50,
        b"GARBAGE\r\n\r\n",
    ]
    for data in payloads:
        with socket.create_connection(("127.0.0.1", gateway.proxy_port), timeout=10) as s:
            # The proxy may reset the connection (it closes with our bytes unread) at any point.
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except TimeoutError:
                raise AssertionError(f"the proxy kept {data[:10]!r}... open") from None
            except OSError:  # reset, broken pipe, not connected: closed by the proxy
                pass
    # A TLS hello for an unknown cluster is closed without an answer.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", gateway.proxy_port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            ctx.wrap_socket(raw, server_hostname="daskgateway-doesnotexist")
    assert request(gateway, "GET", "/api/health", user=None)[0] == 200
