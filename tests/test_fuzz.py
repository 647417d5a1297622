"""Property: no request, however malformed, makes a real gateway answer 5xx or stop serving.

Hypothesis draws methods, paths (every endpoint, with real and made-up cluster names),
headers (credentials good, bad and garbled; browser fetch modes) and bodies (JSON of any
shape, or bytes). ``bench/fuzz.py`` does the same at volume against the public port,
with random bytes and malformed TLS hellos as well.
"""

from __future__ import annotations

import base64

import pytest
import requests

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers import PASSWORD  # noqa: E402

NAMES = st.sampled_from(["", "x", "0" * 32, "../..", "%2e%2e", "a b", "\u00e9", "REAL"])
PATHS = st.one_of(
    st.sampled_from(
        [
            "/api/version",
            "/api/health",
            "/api/v1/clusters/",
            "/api/v1/clusters/{name}",
            "/api/v1/clusters/{name}/scale",
            "/api/v1/clusters/{name}/adapt",
            "/api/v1/clusters/{name}/heartbeat",
            "/api/v1/cluster-details/",
            "/api/v1/cluster-details/{name}",
            "/api/v1/routes",
            "/api/v1/options",
            "/api/v1/whoami",
            "/clusters/{name}/status",
            "/clusters/{name}/",
        ]
    ),
    st.text(min_size=1, max_size=40).map(lambda t: "/" + t),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "count",
        "minimum",
        "maximum",
        "active",
        "cluster_options",
        "shared_groups",
        "workers",
        "scheduler_address",
        "dashboard_address",
        "closed_workers",
        "adaptive",
    ]
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=200),
    JSON.map(lambda v: {"json": v}),
    st.dictionaries(FIELDS, JSON, max_size=4).map(lambda v: {"json": v}),
)


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8", "replace")).decode()


AUTH = st.one_of(
    st.none(),
    st.just(_basic("alice", PASSWORD)),
    st.just(_basic("bob", PASSWORD)),
    st.builds(_basic, st.text(max_size=10), st.text(max_size=10)),
    st.text(max_size=40).map(lambda t: "token " + t),
    st.text(max_size=40),
)


@pytest.fixture
def fuzz_target(make_gateway):
    gw = make_gateway("c.DaskGateway.max_clusters_per_user = 2\n")
    with gw.gateway() as g:
        real = g.submit()
    return gw, real


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=PATHS,
    name=NAMES,
    auth=AUTH,
    mode=st.sampled_from([None, "cors", "navigate", "websocket"]),
    body=BODIES,
    query=st.sampled_from(["", "?wait", "?status=RUNNING", "?status=bogus", "?since=x"]),
)
def test_no_request_gets_a_5xx(fuzz_target, method, path, name, auth, mode, body, query):
    gw, real = fuzz_target
    url = gw.api_address + path.replace("{name}", real if name == "REAL" else name) + query
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if mode:
        headers["Sec-Fetch-Mode"] = mode
    kwargs = {}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif body:
        kwargs.update(body)
    try:
        r = requests.request(method, url, headers=headers, timeout=30, **kwargs)
    except (
        UnicodeError,
        ValueError,
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidJSONError,
    ):
        return  # the client itself refused to send it
    assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
    if (
        r.status_code >= 400
        and method != "HEAD"
        and r.headers.get("Content-Type", "").startswith("application/json")
    ):
        assert "error" in r.json()
    # and it keeps serving others
    ok = requests.get(gw.api_address + "/api/health", timeout=30)
    assert ok.status_code == 200
