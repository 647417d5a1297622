"""Hostile input against a real gateway: forged addresses, bad bodies, races, logins.

Schedulers run their owner's code, so here a "scheduler" is a small script posting the
heartbeat an attacker would, with the cluster's own token.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import FORGING_SCHEDULER, PASSWORD


def basic(user, password=PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def api(gw, method, path, user="alice", **kwargs):
    headers = kwargs.pop("headers", {})
    if user:
        headers.setdefault("Authorization", basic(user))
    return requests.request(method, gw.api_address + path, headers=headers, timeout=30, **kwargs)


def stored_cluster(gw, name):
    """The gateway's own record of a cluster (token included), read from its database."""
    from jupyterhub_dask_gateway.store import Store, load_or_create_key_file

    keys = load_or_create_key_file(os.path.join(gw.state_dir, "encryption.key"))
    store = Store("sqlite:///" + os.path.join(gw.state_dir, "gateway.sqlite"), keys)
    try:
        return store.load()[name]
    finally:
        store.close()


def routes(gw) -> dict:
    token = open(os.path.join(gw.state_dir, "proxy.token")).read().strip()
    r = api(gw, "GET", "/api/v1/routes", user=None, headers={"Authorization": f"token {token}"})
    r.raise_for_status()
    return r.json()["routes"]


@pytest.fixture
def forging_gateway(make_gateway, tmp_path):
    stub = tmp_path / "forging-python"
    stub.write_text(f"#!{sys.executable}\n" + FORGING_SCHEDULER)
    stub.chmod(0o755)

    def start(claims: dict):
        extra = f"""
            c.ClusterConfig.python = {str(stub)!r}
            c.ClusterConfig.environment = {{"FORGED": {json.dumps(claims)!r}}}
            c.DaskGateway.cluster_start_timeout = 30
        """
        return make_gateway(textwrap.dedent(extra))

    return start


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"scheduler_address": "tls://10.11.12.13:8786"}, "not an address of this host"),
        ({"scheduler_address": "tls://169.254.169.254:80"}, "link-local"),
        ({"dashboard_address": "http://169.254.169.254:80"}, "link-local"),
        # loopback, but a port no process of the cluster holds (someone else's service)
        ({"api_address": "http://127.0.0.1:1"}, "does not listen"),
        ({"scheduler_address": "tls://[fd00:ec2::254]:80"}, "metadata"),
        ({"scheduler_address": "tls://no-such-host.invalid:80"}, "does not resolve"),
    ],
)
def test_forged_first_heartbeat_is_refused(forging_gateway, claims, why):
    from dask_gateway import GatewayClusterError

    gw = forging_gateway(claims)
    with gw.gateway() as g:
        name = g.submit()
        with pytest.raises(GatewayClusterError, match="Refused the scheduler's addresses"):
            g.connect(name)
        reason = api(gw, "GET", f"/api/v1/cluster-details/{name}").json()["reason"]
    assert why in reason, reason
    assert name not in routes(gw)
    assert "Refused the scheduler's addresses" in gw.log() and name in gw.log()


def test_address_change_after_start_is_refused(gateway):
    with gateway.gateway() as g, g.new_cluster() as cluster:
        record = stored_cluster(gateway, cluster.name)
        body = {
            "scheduler_address": record.scheduler_address,
            "dashboard_address": "http://10.0.0.1:8787",
            "api_address": record.api_address,
        }
        r = api(
            gateway,
            "POST",
            f"/api/v1/clusters/{cluster.name}/heartbeat",
            user=None,
            headers={"Authorization": f"token {record.token}"},
            json=body,
        )
        assert r.status_code == 403
        details = api(gateway, "GET", f"/api/v1/cluster-details/{cluster.name}").json()
        assert details["status"] in ("STOPPING", "FAILED")
        assert "changed its dashboard_address" in details["reason"]
        assert cluster.name not in routes(gateway)


def test_bad_input_gets_4xx_and_changes_nothing(gateway):
    with gateway.gateway() as g, g.new_cluster() as cluster:
        name = cluster.name
        # counts: huge, past sqlite's integers, negative, not a number
        for count in (10**7, 2**63, -1, "3", 1.5, True, None):
            r = api(gateway, "POST", f"/api/v1/clusters/{name}/scale", json={"count": count})
            assert 400 <= r.status_code < 500 and "error" in r.json(), (count, r.text)
        r = api(gateway, "POST", f"/api/v1/clusters/{name}/adapt", json={"maximum": 2**63})
        assert r.status_code == 422
        # deeply nested JSON, not JSON, not an object
        for body in (b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b"[1, 2]"):
            r = api(gateway, "POST", "/api/v1/clusters/", data=body)
            assert r.status_code == 400 and "error" in r.json()
        # credentials that are not even text the way they should be
        for header in ("Basic \u00e9t\u00e9", "Basic !!!", "token \u00e9", "Bearer"):
            r = api(
                gateway, "GET", "/api/v1/clusters/", user=None, headers={"Authorization": header}
            )
            assert r.status_code == 401, header
        # malformed heartbeats with the cluster's real token
        token = stored_cluster(gateway, name).token
        for bad in (
            {"count": "many"},
            {"count": 2**63},
            {"workers": []},
            {"workers": {"w": {"nthreads": "x"}}},
            {"closed_workers": "w1"},
            {"adaptive": {"minimum": -1, "maximum": 2}},
            {"scheduler_address": 7},
            {"handoff": "yes"},
        ):
            r = api(
                gateway,
                "POST",
                f"/api/v1/clusters/{name}/heartbeat",
                user=None,
                headers={"Authorization": f"token {token}"},
                json=bad,
            )
            assert r.status_code == 400 and "error" in r.json(), (bad, r.text)
        r = api(
            gateway,
            "POST",
            f"/api/v1/clusters/{name}/heartbeat",
            user=None,
            headers={"Authorization": "token \u00e9\u00e9"},
            json={},
        )
        assert r.status_code == 403
        # nothing of that changed the cluster, and it still computes
        assert g.get_cluster(name).status.name == "RUNNING"
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            assert client.submit(sum, [1, 2]).result() == 3


def test_scale_beyond_the_default_limit_is_clamped_quickly(gateway):
    with gateway.gateway() as g, g.new_cluster() as cluster:
        start = time.monotonic()
        r = api(gateway, "POST", f"/api/v1/clusters/{cluster.name}/scale", json={"count": 10_000})
        assert r.status_code == 200 and r.json()["ok"] is False
        assert "limit of 100 workers" in r.json()["msg"]
        assert time.monotonic() - start < 5
        # the gateway keeps answering everyone while it works through the records
        assert api(gateway, "GET", "/api/version", user=None).status_code == 200
        cluster.scale(0)


def test_concurrent_creates_cannot_pass_the_quota(make_gateway):
    gw = make_gateway("c.DaskGateway.max_clusters_per_user = 1\n")

    def create(_):
        return api(gw, "POST", "/api/v1/clusters/", json={}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, range(8)))
    assert sorted(codes) == [201] + [409] * 7, codes
    clusters = api(gw, "GET", "/api/v1/clusters/").json()
    assert len(clusters) == 1
    for name in clusters:
        api(gw, "DELETE", f"/api/v1/clusters/{name}")


def test_basic_admins_and_grouped_users_need_their_own_password(make_gateway):
    gw = make_gateway(
        textwrap.dedent("""
        c.BasicAuthenticator.admin_users = {"boss"}
        c.BasicAuthenticator.passwords = {"root-ish": "own-password"}
        c.BasicAuthenticator.user_groups = {"carol": ["team"]}
        """)
    )
    for user in ("boss", "carol", "root-ish"):
        assert api(gw, "GET", "/api/v1/clusters/", user=user).status_code == 401, user
    assert api(gw, "GET", "/api/v1/clusters/", user="alice").status_code == 200
    r = api(
        gw, "GET", "/api/v1/clusters/", headers={"Authorization": basic("root-ish", "own-password")}
    )
    assert r.status_code == 200


def test_session_cookie_and_browser_scripts(gateway):
    r = api(gateway, "GET", "/api/v1/clusters/")
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie
    r = api(gateway, "GET", "/api/v1/clusters/", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.headers["Set-Cookie"]
    # A page's script in a browser, with the browser's saved Basic login: refused.
    for mode in ("cors", "no-cors", "same-origin"):
        r = api(gateway, "GET", "/api/v1/clusters/", headers={"Sec-Fetch-Mode": mode})
        assert r.status_code == 403 and "scripts in web pages" in r.json()["error"]
    # A navigation (the user opening the URL) is fine.
    r = api(gateway, "GET", "/api/v1/clusters/", headers={"Sec-Fetch-Mode": "navigate"})
    assert r.status_code == 200
