"""Browser-test fixtures: Debian's headless Chromium (through Playwright) and a real JupyterLab.

JupyterLab runs as a subprocess on 127.0.0.1 with this repository's server extension and
its built lab extension (``jupyterhub_dask_gateway/server_extension/labextension``, found
through ``extra_labextensions_path``, so no install is needed), in throw-away config,
settings, workspace and notebook directories. It talks to a real gateway started by the
``make_gateway`` fixture of ``tests/conftest.py``; process and account helpers come from
``tests/helpers.py``.

Nothing is downloaded: Playwright drives ``/usr/bin/chromium`` (``apt-get install
chromium``); ``npx playwright install`` is never needed. Tests skip when the browser,
Playwright or the built lab extension is missing.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest

from helpers import free_port, give_to, kill_all, start_logged, terminate, wait_for
from jupyterhub_dask_gateway.accounts import blocked_for_others

REPO = Path(__file__).resolve().parents[2]
# This checkout's build, ahead of any installed copy; but the servers run as alice, and a
# checkout other accounts cannot read (a clone under /root) is served from the copy that
# scripts/setup.sh installed into the environment instead.
LABEXTENSION = REPO / "jupyterhub_dask_gateway" / "server_extension" / "labextension"
if blocked_for_others(str(LABEXTENSION), need_read=True):
    LABEXTENSION = (
        Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterhub-dask-gateway"
    )
CHROMIUM = os.environ.get("JHDG_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "ui-test-password"
LAB_USER = "alice"  # the standalone JupyterLab runs as this account

# Cluster options the UI tests' gateway offers: one of each type the form must draw.
GATEWAY_OPTIONS = textwrap.dedent(
    f"""
    c.BasicAuthenticator.password = {PASSWORD!r}

    from jupyterhub_dask_gateway.options import (
        Bool, Float, Integer, Mapping, Options, Select, String,
    )

    def _options_handler(options):
        return {{
            "worker_cores": options.worker_cores,
            "worker_memory": int(options.worker_memory * 2**30),
            "environment": dict(options.environment),
        }}

    c.Backend.cluster_options = Options(
        Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
        Float("worker_memory", 0.5, min=0.25, max=1.0, label="Worker memory (GiB)"),
        Select("profile", ["standard", "high-memory"], label="Profile"),
        Bool("verbose", False, label="Verbose logs"),
        String("note", "", label="Note"),
        Mapping("environment", {{}}, label="Environment variables"),
        handler=_options_handler,
    )
    """
)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (skips if Chromium or Playwright is missing)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def ui_gateway(make_gateway):
    """A real gateway (Basic auth, local backend) offering one cluster option of each type."""
    return make_gateway(extra=GATEWAY_OPTIONS)


class JupyterLab:
    """A ``jupyter lab`` subprocess on 127.0.0.1 with our extensions, and its temp dirs."""

    def __init__(self, directory: Path, gateway, login=(LAB_USER, PASSWORD)):
        if not (LABEXTENSION / "package.json").exists():
            pytest.skip("the lab extension is not built (run `jlpm build` first)")
        self.directory = directory
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.root = directory / "notebooks"
        self.log_path = directory / "jupyterlab.log"
        # whom the relay (and kernels) log in to the gateway as; the server runs as alice
        self.login = login
        for sub in ("notebooks", "config", "settings", "workspaces", "labextensions", "runtime"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        # the repository's build, ahead of any installed copy
        (directory / "labextensions" / "jupyterhub-dask-gateway").symlink_to(LABEXTENSION)
        self._write_settings()
        self._write_config(gateway)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path="lab") -> str:
        return f"{self.url}/{path}?token={self.token}"

    def _write_settings(self):
        settings = self.directory / "settings"

        def put(plugin, values):
            package, _, name = plugin.partition(":")
            path = settings / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

        # no news/update toast over the panel, and a quick refresh for the tests
        put(
            "@jupyterlab/apputils-extension:notification",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        put("jupyterhub-dask-gateway:plugin", {"refreshInterval": 1})

    def _write_config(self, gateway):
        config = {
            "ServerApp": {
                "ip": "127.0.0.1",
                "port": self.port,
                "port_retries": 0,
                "open_browser": False,
                "root_dir": str(self.root),
                "jpserver_extensions": {"jupyterhub_dask_gateway.server_extension": True},
            },
            "IdentityProvider": {"token": self.token},
            "LabApp": {
                "extension_manager": "readonly",
                "expose_app_in_browser": True,
                "user_settings_dir": str(self.directory / "settings"),
                "workspaces_dir": str(self.directory / "workspaces"),
                "news_url": None,
            },
            "LabServerApp": {"extra_labextensions_path": [str(self.directory / "labextensions")]},
            # what JupyterHub's spawner environment would give a server, written out:
            # the extension exports it to kernels (DASK_GATEWAY__ADDRESS, ...)
            "DaskGatewayExtension": {
                "address": gateway.address,
                "public_address": gateway.address,
                "proxy_address": gateway.proxy_address,
            },
        }
        (self.directory / "config" / "jupyter_server_config.json").write_text(json.dumps(config))

    def start(self, timeout=60):
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.directory / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.directory / "runtime"),
            # a standalone gateway: Basic auth, for the relay and for kernels alike
            "DASK_GATEWAY__AUTH__TYPE": "basic",
            "DASK_GATEWAY__AUTH__KWARGS__USERNAME": self.login[0],
            "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": self.login[1],
        }
        for var in (
            "DASK_GATEWAY__ADDRESS",
            "DASK_GATEWAY__PROXY_ADDRESS",
            "DASK_GATEWAY__PUBLIC_ADDRESS",
            "JUPYTERHUB_API_TOKEN",
        ):
            env.pop(var, None)
        # As alice's own account, as under the Hub (JupyterLab refuses to run as root).
        alice = pwd.getpwnam(LAB_USER)
        env.update(HOME=alice.pw_dir, USER=LAB_USER, LOGNAME=LAB_USER)
        give_to(LAB_USER, self.directory)
        self.proc = start_logged(
            [sys.executable, "-m", "jupyterlab", "--no-browser"],
            self.log_path,
            cwd=self.root,
            env=env,
            user=alice.pw_uid,
            group=alice.pw_gid,
            extra_groups=[],
        )

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(ready, timeout, what="JupyterLab to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        # its kernels, looked up while they are still its children
        try:
            kernels = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            kernels = []
        terminate(self.proc, 15)
        kill_all(kernels)


@pytest.fixture
def lab_login():
    """(user, password) the Lab's relay logs in to the gateway with; parametrize to change."""
    return (LAB_USER, PASSWORD)


@pytest.fixture
def lab(tmp_path, ui_gateway, lab_login):
    """A running JupyterLab whose server extension reaches ``ui_gateway`` as ``lab_login``."""
    server = JupyterLab(tmp_path / "lab", ui_gateway, login=lab_login).start()
    yield server
    server.stop()


@pytest.fixture
def hub(tmp_path, make_hub):
    """A running JupyterHub (``make_hub`` of ``tests/conftest.py``) whose users get JupyterLab.

    Their servers load this repository's lab extension (ahead of any installed copy) and
    server extension, with quick panel refreshes and no news toasts; the gateway runs as
    the Hub's managed service.
    """
    if not (LABEXTENSION / "package.json").exists():
        pytest.skip("the lab extension is not built (run `jlpm build` first)")
    directory = tmp_path / "hub-lab"
    jupyter_path = directory / "jupyter-path"
    (jupyter_path / "labextensions").mkdir(parents=True)
    (jupyter_path / "labextensions" / "jupyterhub-dask-gateway").symlink_to(LABEXTENSION)
    settings = directory / "lab-settings"
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "jupyterhub-dask-gateway/plugin": {"refreshInterval": 1},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    # alice's server saves settings there (the panel's dask-labextension hand-off does),
    # and keeps its workspace in this Hub's directory, not what her account kept from
    # earlier tests
    workspaces = directory / "workspaces"
    workspaces.mkdir()
    give_to(LAB_USER, workspaces, settings)
    server = make_hub(
        hub_config=f"""
        c.Spawner.default_url = "/lab"
        c.Spawner.args = ["--LabApp.expose_app_in_browser=True",
                          "--LabApp.extension_manager=readonly"]
        c.Spawner.environment = {{
            "JUPYTER_PATH": "{jupyter_path}",
            "JUPYTERLAB_SETTINGS_DIR": "{settings}",
            "JUPYTERLAB_WORKSPACES_DIR": "{workspaces}",
        }}
        """
    )
    yield server
    server.stop()


@pytest.fixture
def hub_page(browser, hub, artifacts):
    """Alice logged in to the Hub, in her JupyterLab (spawned on login)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url("**/user/alice/lab**", timeout=90_000)
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp !== undefined")
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    yield page
    page.screenshot(path=str(artifacts / "last.png"))
    (artifacts / "jupyterhub.log").write_text(hub.log())
    context.close()


@pytest.fixture
def artifacts(request):
    """Directory for this test's screenshots: ``test-artifacts/<test name>/`` (gitignored)."""
    path = ARTIFACTS / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def page(browser, lab, artifacts):
    """A JupyterLab page, loaded and ready; a screenshot and the Lab log are kept on failure."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        # dashboards of a standalone gateway ask for the same Basic credentials
        http_credentials={"username": "alice", "password": PASSWORD},
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(lab.lab_url())
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
    page.wait_for_selector(".jp-LabShell")
    page.wait_for_function("() => window.jupyterapp !== undefined")
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    yield page
    page.screenshot(path=str(artifacts / "last.png"))
    (artifacts / "jupyterlab.log").write_text(lab.log())
    context.close()
