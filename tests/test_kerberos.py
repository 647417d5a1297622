"""Kerberos against a real MIT KDC on 127.0.0.1 (scripts/kdc-localhost.sh).

The unmodified client with ``KerberosAuth`` after ``kinit``; the failures a site sees
(no ticket, an expired one, one for another service, garbage, a replay) with raw
requests carrying tokens made by the same GSSAPI library the client uses.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import gssapi  # the test extra installs both bindings: a missing one fails, not skips
import kerberos
import pytest
import requests

from helpers import processes_under, wait_for

KDC_DIR = Path(os.environ.get("KDC_DIR", "/var/lib/jupyterhub-dask-gateway-kdc"))
REPO = Path(__file__).resolve().parents[1]
KDC_PASSWORD = "kerberos-test-password"


def _kdc_running() -> bool:
    try:
        pid = int((KDC_DIR / "krb5kdc.pid").read_text())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "krb5kdc"
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def kdc():
    """The realm DASK.TEST; started here (and stopped after) unless test.sh started it."""
    started = not _kdc_running()
    if started:
        subprocess.run(["bash", str(REPO / "scripts/kdc-localhost.sh")], check=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("KRB5_CONFIG", str(KDC_DIR / "krb5.conf"))
    yield KDC_DIR
    mp.undo()
    if started:
        subprocess.run(["bash", str(REPO / "scripts/kdc-localhost-stop.sh")], check=False)


@pytest.fixture
def kinit(kdc, tmp_path, monkeypatch):
    """``kinit(user, lifetime=None)``: a ticket cache of the user's, made the default."""

    def get(user: str, lifetime: str | None = None) -> str:
        cache = f"FILE:{tmp_path}/cc.{user}"
        argv = ["kinit", "-c", cache, *(["-l", lifetime] if lifetime else []), user]
        subprocess.run(argv, input=KDC_PASSWORD + "\n", text=True, check=True, capture_output=True)
        monkeypatch.setenv("KRB5CCNAME", cache)
        return cache

    return get


def negotiate_token(service: str = "HTTP@localhost") -> str:
    """What the client sends: an AP-REQ for ``service`` from the default ticket cache."""
    _, ctx = kerberos.authGSSClientInit(service)
    kerberos.authGSSClientStep(ctx, "")
    return kerberos.authGSSClientResponse(ctx)


def kerberos_config(keytab: Path) -> str:
    return (
        'c.DaskGateway.authenticator_class = "kerberos"\n'
        f'c.GatewayKerberosAuthenticator.keytab = "{keytab}"\n'
        'c.GatewayKerberosAuthenticator.hostname = "localhost"\n'
    )


@pytest.fixture
def kgw(kdc, make_gateway):
    return make_gateway(kerberos_config(kdc / "http.keytab"))


def client(gw):
    from dask_gateway import Gateway
    from dask_gateway.auth import KerberosAuth

    # Clients name the service by the host in the URL: HTTP@localhost.
    return Gateway(
        f"http://localhost:{gw.proxy_port}", proxy_address=gw.proxy_address, auth=KerberosAuth()
    )


def test_the_client_works_with_a_ticket_and_users_stay_apart(kgw, kinit, accounts):
    kinit("alice")
    with client(kgw) as gateway:
        assert gateway.list_clusters() == []
        cluster = gateway.new_cluster()
        try:
            cluster.scale(1)
            with cluster.get_client(set_as_default=False) as dask_client:
                dask_client.wait_for_workers(1, timeout=60)
                assert dask_client.submit(lambda: 6 * 7).result() == 42
            # The per-user local backend ran it as alice's own account.
            workdir = f"{kgw.state_dir}/clusters/{cluster.name}"
            owners = {p.uids().real for p in processes_under(workdir)}
            assert owners == {accounts["alice"].pw_uid}
            assert [c.name for c in gateway.list_clusters()] == [cluster.name]
            kinit("bob")
            with client(kgw) as bob:
                assert bob.list_clusters() == []
                with pytest.raises(ValueError, match="not found"):
                    bob.connect(cluster.name)
            kinit("alice")
        finally:
            cluster.shutdown()
        wait_for(lambda: not processes_under(workdir), 30, what="alice's processes to exit")


def _get(gw, token=None):
    headers = {"Authorization": f"Negotiate {token}"} if token is not None else {}
    return requests.get(
        f"http://localhost:{gw.proxy_port}/api/v1/clusters/", headers=headers, timeout=30
    )


def assert_refused(resp, message: str):
    assert resp.status_code == 401, resp.text
    assert resp.headers["WWW-Authenticate"] == "Negotiate"
    assert message in resp.json()["error"], resp.json()


def test_bad_tickets_get_401_with_the_challenge(kgw, kinit):
    assert_refused(_get(kgw), "Authentication required")  # no ticket at all
    assert_refused(_get(kgw, "bm90IGEgdG9rZW4="), "not a valid Kerberos token")
    assert_refused(_get(kgw, "%%%"), "not base64")
    kinit("alice")
    assert_refused(_get(kgw, negotiate_token("host@localhost")), "for another service")
    good = negotiate_token()
    first = _get(kgw, good)
    assert first.status_code == 200, first.text
    # Mutual authentication: the reply proves the gateway holds the service key.
    assert first.headers["WWW-Authenticate"].startswith("Negotiate ")
    assert_refused(_get(kgw, good), "already used")  # the same token again: a replay
    # What browsers and curl --negotiate send: Kerberos wrapped in SPNEGO.
    spnego = gssapi.SecurityContext(
        name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
        mech=gssapi.Mechanism.from_sasl_name("SPNEGO"),
        usage="initiate",
    )
    wrapped = base64.b64encode(spnego.step()).decode()
    assert _get(kgw, wrapped).status_code == 200
    # An expired ticket (short lifetime): made while valid, presented after it expired
    # and after the clock skew Kerberos tolerates (krb5.conf's clockskew, 5 s here).
    cache = kinit("carol", lifetime="2s")
    stale = negotiate_token()
    expired_at = time.time() + 2 + 5
    wait_for(
        lambda: (
            subprocess.run(["klist", "-s", "-c", cache]).returncode != 0
            and time.time() > expired_at + 1
        ),
        timeout=30,
        what="carol's ticket to expire",
    )
    assert_refused(_get(kgw, stale), "expired")
    # None of that disturbed anyone else.
    kinit("bob")
    assert _get(kgw, negotiate_token()).status_code == 200
    logged = kgw.log()
    assert "Traceback" not in logged
    assert good[:40] not in logged and stale[:40] not in logged  # no tokens in the log


def test_groups_and_admins_come_from_the_account_database(kdc, make_gateway, kinit):
    gw = make_gateway(
        kerberos_config(kdc / "http.keytab")
        + 'c.GatewayKerberosAuthenticator.admin_groups = {"carol"}\n'
    )

    def whoami(user):
        kinit(user)
        resp = requests.get(
            f"http://localhost:{gw.proxy_port}/api/v1/whoami",
            headers={"Authorization": f"Negotiate {negotiate_token()}"},
            timeout=30,
        )
        resp.raise_for_status()
        return resp.json()

    alice, carol = whoami("alice"), whoami("carol")
    assert alice["name"] == "alice" and "alice" in alice["groups"] and not alice["admin"]
    assert carol["admin"] and "carol" in carol["groups"]


@pytest.mark.parametrize("problem", ["missing", "readable by others", "no key for the service"])
def test_keytab_problems_stop_the_gateway_at_start(kdc, make_gateway, tmp_path, problem):
    keytab = tmp_path / "gateway.keytab"
    if problem == "readable by others":
        keytab.write_bytes((kdc / "http.keytab").read_bytes())
        keytab.chmod(0o644)
    elif problem == "no key for the service":
        keytab.write_bytes((kdc / "host.keytab").read_bytes())
        keytab.chmod(0o600)
    gw = make_gateway(kerberos_config(keytab), start=False)
    cli = os.path.join(os.path.dirname(sys.executable), "jupyterhub-dask-gateway")
    out = subprocess.run(
        [cli, "--config", str(gw.config_path)],
        cwd=gw.directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    expected = {
        "missing": "does not exist",
        "readable by others": "chmod 600",
        "no key for the service": "has no usable key for HTTP/localhost",
    }[problem]
    logged = out.stdout + out.stderr
    assert "Not starting: Kerberos keytab" in logged and expected in logged, logged


def test_principals_map_to_users():
    from jupyterhub_dask_gateway.errors import Forbidden
    from jupyterhub_dask_gateway.kerberos import GatewayKerberosAuthenticator

    auth = GatewayKerberosAuthenticator(realm="DASK.TEST")
    assert auth.user_for_principal("alice@DASK.TEST") == "alice"
    with pytest.raises(Forbidden, match="realm OTHER.ORG"):
        auth.user_for_principal("alice@OTHER.ORG")
    with pytest.raises(Forbidden, match="not a user"):
        auth.user_for_principal("HTTP/localhost@DASK.TEST")
    auth.foreign_realms = "keep"
    assert auth.user_for_principal("alice@OTHER.ORG") == "alice@OTHER.ORG"
    auth.principal_to_user = lambda p: p.split("/")[0] if p.endswith("@DASK.TEST") else None
    assert auth.user_for_principal("alice/admin@DASK.TEST") == "alice"
    with pytest.raises(Forbidden, match="may not use this gateway"):
        auth.user_for_principal("eve@OTHER.ORG")
