"""The addresses ``configure_jupyterhub`` hands notebooks, for each way of setting the Hub's.

Unit tests check the derivation (``hub.hub_urls``) for every combination of ``bind_url``,
``ip``/``port``, ``base_url``, ``public_url`` and the call's own arguments, against
JupyterHub's own resolution where it has one, and that the spawn-time value sees settings
made after the call. Then, for each way an admin may set the Hub's address, a real Hub
(``make_hub``) spawns alice's server and a kernel in it runs ``Gateway().new_cluster()``
with no arguments and computes on the cluster.
"""

from __future__ import annotations

import re

import pytest
from test_hub import run_in_kernel, wait_stopped
from traitlets.config import Config
from traitlets.config.loader import DeferredConfigString

from jupyterhub_dask_gateway import configure_jupyterhub
from jupyterhub_dask_gateway.hub import SERVICE_ROLE_SCOPES, hub_urls

SERVICE = "dask-gateway"


# --- the derivation, no Hub ---------------------------------------------------------------

# (c.JupyterHub settings, call arguments, expected public URL, expected notebook URL)
DERIVATIONS = [
    ({}, {}, "http://127.0.0.1:8000", None),
    ({"bind_url": "http://127.0.0.1:9000"}, {}, "http://127.0.0.1:9000", None),
    ({"bind_url": "http://:9000/jh/"}, {}, "http://127.0.0.1:9000/jh", None),
    ({"bind_url": "http://10.0.0.5:9000/jh"}, {}, "http://10.0.0.5:9000/jh", None),
    ({"bind_url": "http://hub.internal"}, {}, "http://hub.internal", None),
    ({"bind_url": "http://[::1]:9000/"}, {}, "http://[::1]:9000", None),
    ({"port": 8001}, {}, "http://127.0.0.1:8001", None),
    ({"ip": "127.0.0.2", "port": 8001}, {}, "http://127.0.0.2:8001", None),
    ({"ip": "0.0.0.0", "port": 8001}, {}, "http://127.0.0.1:8001", None),
    ({"ip": "::1", "port": 8001}, {}, "http://[::1]:8001", None),
    # as the command line gives it (jupyterhub --port 8001)
    ({"ip": "127.0.0.1", "port": DeferredConfigString("8001")}, {}, "http://127.0.0.1:8001", None),
    (
        {"ip": "127.0.0.1", "port": 8001, "base_url": "/jupyter/"},
        {},
        "http://127.0.0.1:8001/jupyter",
        None,
    ),
    ({"base_url": "jupyter"}, {}, "http://127.0.0.1:8000/jupyter", None),
    # JupyterHub rebuilds bind_url from ip/port/base_url once any is set: port 8000 here,
    # on every interface, so also on the one bind_url names
    ({"bind_url": "http://10.0.0.5:9000", "base_url": "/x/"}, {}, "http://10.0.0.5:8000/x", None),
    ({"bind_url": "http://127.0.0.1:9000/y/", "port": 8001}, {}, "http://127.0.0.1:8001/y", None),
    (
        {"bind_url": "http://127.0.0.1:9000", "ssl_cert": "/etc/hub.pem"},
        {},
        "https://127.0.0.1:9000",
        None,
    ),
    # the public URL, with the base URL added when it has no path (as JupyterHub does)
    (
        {"bind_url": "http://:8000/jh/", "public_url": "https://hub.example.org"},
        {},
        "https://hub.example.org/jh",
        None,
    ),
    (
        {"public_url": "https://hub.example.org/x/", "base_url": "/x/"},
        {},
        "https://hub.example.org/x",
        None,
    ),
    ({"public_url": "hub.example.org"}, {}, "https://hub.example.org", None),
    (
        {"subdomain_host": "https://hub.example.org", "base_url": "/x/"},
        {},
        "https://hub.example.org/x",
        None,
    ),
    ({"bind_url": "http+unix://%2Fsrv%2Fhub.sock"}, {}, "http://127.0.0.1:8000", None),
    # the call's arguments win
    (
        {"bind_url": "http://:8000/jh/", "public_url": "https://hub.example.org/jh/"},
        {"hub_public_url": "https://lb.example.org"},
        "https://lb.example.org/jh",
        None,
    ),
    (
        {"bind_url": "http://:8000/jh/", "public_url": "https://hub.example.org/jh/"},
        {"notebook_hub_url": "http://proxy-public"},
        "https://hub.example.org/jh",
        "http://proxy-public/jh",
    ),
    (
        {"ip": "127.0.0.1", "port": 8001},
        {"notebook_hub_url": "http://hub.internal:8001/other/"},
        "http://127.0.0.1:8001",
        "http://hub.internal:8001/other",
    ),
]


def hub_section(settings: dict) -> Config:
    c = Config()
    for key, value in settings.items():
        setattr(c.JupyterHub, key, value)
    return c


@pytest.mark.parametrize(("settings", "args", "public", "notebook"), DERIVATIONS)
def test_hub_urls(settings, args, public, notebook):
    assert hub_urls(hub_section(settings).JupyterHub, **args) == (public, notebook or public)


@pytest.mark.parametrize(
    "settings",
    [
        s
        for s, args, _, _ in DERIVATIONS
        if not args and not {"public_url", "subdomain_host"} & set(s) and "+unix" not in str(s)
    ],
)
def test_proxy_url_is_where_jupyterhub_binds(settings):
    """Without a public URL, the derived URL is JupyterHub's own bind_url, made reachable."""
    from urllib.parse import urlparse

    from jupyterhub.app import JupyterHub

    JupyterHub.clear_instance()
    app = JupyterHub(config=hub_section(settings))
    bound = urlparse(app.bind_url)
    derived = urlparse(hub_urls(hub_section(settings).JupyterHub)[0] + "/")
    assert (derived.scheme, derived.port) == (bound.scheme, bound.port)
    assert derived.path == app.base_url  # where the Hub serves (bind_url's path, normalised)
    if bound.hostname and bound.hostname not in ("0.0.0.0", "::"):
        assert derived.hostname == bound.hostname
    else:  # every interface: 127.0.0.1, or the one bind_url names
        named = urlparse(str(settings.get("bind_url", ""))).hostname
        assert derived.hostname in ("127.0.0.1", named)


@pytest.fixture
def hub_side(monkeypatch, tmp_path):
    """``configure_jupyterhub`` as the Hub runs it (not inside the gateway service)."""
    monkeypatch.delenv("JHDG_LOADING_CONFIG", raising=False)
    return str(tmp_path / "jupyterhub_config.py")


def test_settings_after_the_call_count_at_spawn_time(hub_side):
    from jupyterhub.app import JupyterHub
    from jupyterhub.spawner import Spawner

    c = Config()
    configure_jupyterhub(c, config_file=hub_side, proxy_address="0.0.0.0:8786")
    # the call stored no placeholder for the Hub settings it read
    assert not {"bind_url", "ip", "port", "base_url", "public_url"} & set(c.JupyterHub)
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = 8001
    c.JupyterHub.base_url = "/jupyter/"
    env = c.Spawner.environment
    assert env["DASK_GATEWAY__ADDRESS"] == "http://127.0.0.1:8000/services/dask-gateway"  # so far
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:8786"

    JupyterHub.clear_instance()
    assert JupyterHub(config=c).bind_url == "http://127.0.0.1:8001/jupyter/"
    # a spawner loads the Hub's whole config; JupyterHub calls callable values with it
    spawner = Spawner(config=c)
    values = {k: v(spawner) if callable(v) else v for k, v in spawner.environment.items()}
    assert values == {
        "DASK_GATEWAY__ADDRESS": "http://127.0.0.1:8001/jupyter/services/dask-gateway",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "http://127.0.0.1:8001/jupyter/services/dask-gateway",
        "DASK_GATEWAY__PROXY_ADDRESS": "gateway://127.0.0.1:8786",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    assert "read:servers" in SERVICE_ROLE_SCOPES
    assert c.JupyterHub.load_roles[-1]["scopes"] == SERVICE_ROLE_SCOPES


def test_explicit_addresses(hub_side):
    c = Config()
    c.JupyterHub.public_url = "https://hub.example.org/"
    c.Spawner.environment = {"OTHER": "kept"}
    configure_jupyterhub(
        c,
        config_file=hub_side,
        proxy_address="[::]:8786",
        notebook_hub_url="http://proxy-public",
    )
    assert c.Spawner.environment == {
        "OTHER": "kept",
        "DASK_GATEWAY__ADDRESS": "http://proxy-public/services/dask-gateway",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "https://hub.example.org/services/dask-gateway",
        "DASK_GATEWAY__PROXY_ADDRESS": "gateway://127.0.0.1:8786",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    for bad in ({"notebook_hub_url": "proxy-public"}, {"hub_public_url": "hub.example.org"}):
        with pytest.raises(ValueError, match="scheme"):
            configure_jupyterhub(Config(), config_file=hub_side, **bad)


def test_zero_to_jupyterhub_settings_do_not_hide_ours(hub_side, monkeypatch):
    """z2jh always sets c.KubeSpawner.environment, which would replace c.Spawner's; and
    JupyterHub gives a managed service almost none of the pod's environment."""
    from kubespawner_like import KubeSpawner

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("HUB_SERVICE_PORT", "8081")
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "secret-of-the-hub")
    c = Config()
    c.KubeSpawner.environment = {"DASK_GATEWAY__AUTH__TYPE": "admin's own", "X": "1"}
    configure_jupyterhub(c, config_file=hub_side)
    env = KubeSpawner(config=c).environment
    assert env["X"] == "1" and env["DASK_GATEWAY__AUTH__TYPE"] == "admin's own"
    assert "DASK_GATEWAY__ADDRESS" in env and "DASK_GATEWAY__PROXY_ADDRESS" in env
    [service] = c.JupyterHub.services
    assert service["environment"]["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert service["environment"]["HUB_SERVICE_PORT"] == "8081"
    assert "CONFIGPROXY_AUTH_TOKEN" not in service["environment"]


# --- a real Hub and a kernel, for each way of setting the Hub's address ------------------

KERNEL_CODE = """
import os
from dask_gateway import Gateway

for key in ("ADDRESS", "PUBLIC_ADDRESS", "PROXY_ADDRESS"):
    print(key, os.environ["DASK_GATEWAY__" + key])
gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=60)
print("CLUSTER", cluster.name)
print("RESULT", client.submit(sum, range(10)).result())
client.close()
cluster.shutdown()
gateway.close()
"""

ONLY_IP_PORT = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
"""

HUBS = {
    "bind_url": dict(expected="http://127.0.0.1:{port}"),
    # legacy traits, set after the call (the spawn-time value sees them)
    "ip_port": dict(
        hub_address=ONLY_IP_PORT, address_after_call=True, expected="http://127.0.0.1:{port}"
    ),
    "base_url": dict(
        base_url="/jupyter/",
        hub_address=ONLY_IP_PORT + 'c.JupyterHub.base_url = "{base_url}"\n',
        expected="http://127.0.0.1:{port}/jupyter",
    ),
    # the Hub's public URL is not reachable from notebooks (nothing listens on 127.0.0.3);
    # they reach the same proxy by another name
    "notebook_hub_url": dict(
        hub_address="""
        c.JupyterHub.bind_url = "http://127.0.0.1:{port}{base_url}"
        c.JupyterHub.public_url = "http://127.0.0.3:{port}{base_url}"
        """,
        configure_args='notebook_hub_url="http://localhost:{port}",',
        expected="http://localhost:{port}",
        public="http://127.0.0.3:{port}",
    ),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("way", list(HUBS))
def test_zero_config_kernel(make_hub, way):
    spec = dict(HUBS[way])
    expected, public = spec.pop("expected"), spec.pop("public", None)
    hub = make_hub(**spec)
    try:
        expected = expected.format(port=hub.port) + f"/services/{SERVICE}"
        public = public.format(port=hub.port) + f"/services/{SERVICE}" if public else expected
        token = hub.new_token("alice")["token"]
        out = run_in_kernel(hub, "alice", token, KERNEL_CODE)
        assert f"ADDRESS {expected}\n" in out, out
        assert f"PUBLIC_ADDRESS {public}\n" in out, out
        assert f"PROXY_ADDRESS {hub.gateway_proxy_address}\n" in out, out
        assert "RESULT 45" in out, out
        name = re.search(r"CLUSTER (\w+)", out).group(1)
        with hub.gateway(token) as alice:  # the kernel's cluster was alice's, and it is gone
            wait_stopped(alice, name)
    finally:
        hub.stop()  # one Hub at a time on this machine
