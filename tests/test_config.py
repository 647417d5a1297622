"""The configuration surface: help on every trait, --generate-config, --help, bad values."""

import subprocess
import sys

import pytest
from traitlets import TraitError

from jupyterhub_dask_gateway.app import DaskGateway
from jupyterhub_dask_gateway.backends.base import ClusterConfig


def test_every_config_trait_has_help():
    app = DaskGateway()
    missing = []
    for cls in app.classes:
        for name, trait in cls.class_traits(config=True).items():
            if cls.__module__.startswith("jupyterhub_dask_gateway") and not trait.help:
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, missing


def test_generate_config_and_help():
    cmd = [sys.executable, "-m", "jupyterhub_dask_gateway.app"]
    out = subprocess.run(cmd + ["--generate-config"], capture_output=True, text=True, check=True)
    assert "c.DaskGateway.proxy_address" in out.stdout
    assert "c.ClusterConfig.worker_memory" in out.stdout
    assert "c.LocalBackend.warm_pool_size" in out.stdout
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True)
    assert "--config" in out.stdout


def test_memory_strings_and_limits():
    cfg = ClusterConfig(
        worker_memory="1 G", scheduler_memory="512M", cluster_max_memory="3G", cluster_max_workers=5
    )
    assert cfg.worker_memory == 2**30
    assert cfg.max_workers() == 2  # (3 G - 0.5 G) // 1 G
    with pytest.raises(TraitError):
        ClusterConfig(worker_memory="lots")


def test_bad_address_is_refused(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text('c.DaskGateway.address = "nonsense"\n')
    out = subprocess.run(
        [sys.executable, "-m", "jupyterhub_dask_gateway.app", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "host:port" in out.stderr + out.stdout


def test_hub_authenticator_settings_do_not_configure_the_gateway(tmp_path):
    """The Hub's ``c.Authenticator.*`` in jupyterhub_config.py: no warning, no admins granted;
    the gateway's own settings in the same file still apply."""
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        'c.Authenticator.admin_users = {"mallory"}\n'
        'c.Authenticator.allowed_users = {"alice", "mallory"}\n'
        'c.BasicAuthenticator.admin_users = {"ops"}\n'
        'c.BasicAuthenticator.password = "x"\n'
        'c.DaskGateway.authenticator_class = "basic"\n'
        # The Hub's own log settings, on the base class both applications share.
        'c.Application.log_level = "DEBUG"\n'
        'c.Application.log_format = "HUB %(message)s"\n'
        "c.DaskGateway.max_clusters_per_user = 2\n"
    )
    script = f"""
import asyncio, logging, io
from jupyterhub_dask_gateway.app import DaskGateway
from jupyterhub_dask_gateway.auth import load_authenticator_class
stream = io.StringIO()
app = DaskGateway()
app.log.addHandler(logging.StreamHandler(stream))
app.initialize(["--config", {str(config)!r}])
auth = load_authenticator_class(app.authenticator_class)(parent=app, log=app.log)
print(sorted(auth.admin_users))
print(app.log_level, app.log_format.startswith("HUB"), app.max_clusters_per_user)
print(stream.getvalue())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    admins, logged = out.stdout.splitlines()[0], out.stdout + out.stderr
    assert admins == "['ops']", out.stdout
    assert out.stdout.splitlines()[1] == "20 False 2", out.stdout  # INFO, ours, and ours
    assert "not recognized" not in logged and "allowed_users" not in logged, logged


def test_no_gateway_config_class_shares_a_name_with_the_hubs():
    """``c.<Name>`` configures every class of that name: apart from the traitlets bases
    the gateway drops from a shared file, no class of one configures the other."""
    import jupyterhub.app

    from jupyterhub_dask_gateway import auth, backends
    from jupyterhub_dask_gateway.app import SHARED_BASE_SECTIONS, DaskGateway

    def names(classes):
        return {k.__name__ for cls in classes for k in cls.mro() if hasattr(k, "class_traits")}

    hub = names(jupyterhub.app.JupyterHub().classes)
    ours = names(
        [
            *DaskGateway().classes,
            *auth.GatewayAuthenticator.__subclasses__(),
            *backends.base.Backend.__subclasses__(),
        ]
    )
    assert "Spawner" in hub and "LocalBackend" in ours  # the sets are what they seem
    shared = (hub & ours) - set(SHARED_BASE_SECTIONS) - {"HasTraits", "HasDescriptors"}
    assert not shared, shared


def test_dask_gateway_server_class_paths_load_ours():
    from jupyterhub_dask_gateway.auth import BasicAuthenticator, load_authenticator_class
    from jupyterhub_dask_gateway.backends.base import load_backend_class
    from jupyterhub_dask_gateway.backends.local import LocalBackend

    assert load_backend_class("dask_gateway_server.backends.local.LocalBackend") is LocalBackend
    assert load_backend_class(
        "dask_gateway_server.backends.jobqueue.slurm.SlurmBackend"
    ).__name__ == ("SlurmBackend")
    assert load_authenticator_class("dask_gateway_server.auth.SimpleAuthenticator") is (
        BasicAuthenticator
    )
    with pytest.raises(TypeError, match="is not a Backend"):
        load_backend_class("jupyterhub_dask_gateway.models.Cluster")


def test_incomplete_plugins_fail_when_they_are_defined():
    from jupyterhub_dask_gateway.auth import GatewayAuthenticator
    from jupyterhub_dask_gateway.backends.base import Backend

    with pytest.raises(TypeError, match="must define async start_worker, stop_worker"):

        class HalfBackend(Backend):
            async def start_cluster(self, cluster, env):
                return {}

            async def stop_cluster(self, cluster):
                pass

    with pytest.raises(TypeError, match="must define async authenticate_request"):

        class NoAuth(GatewayAuthenticator):
            def authenticate_request(self, handler):  # not a coroutine
                return None
