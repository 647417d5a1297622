"""The JupyterLab panel in headless Chromium, against a real JupyterLab and a real gateway.

The first test walks a cluster's life through the panel the way a user would, with a
standalone gateway (Basic auth): open the sidebar, create a cluster from the options form
(one option of each type; validation messages), scale it to two workers and see them,
screenshot the panel in the light and dark themes, insert the connection code into a
notebook and compute with it, open the dashboard in a new tab (and hand it to
dask-labextension), stop the cluster and see it go. The second does the same under a real
JupyterHub, where the gateway is the Hub's service: Hub tokens for the relay and kernels,
dashboards on the Hub's origin, dask-labextension's panes showing the cluster.

Screenshots go to ``test-artifacts/<test>/`` (gitignored); ``docs/screenshots/`` gets the
copies the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.timeout(600)

SIDEBAR = "#jupyterhub-dask-gateway-sidebar"
DASK_SIDEBAR = "#dask-dashboard-launcher"  # dask-labextension's sidebar
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# dask-labextension's URL check runs in the background, slower under load
HAND_OFF_TIMEOUT = 60_000


@pytest.fixture(autouse=True)
def lab_finds_dask_labextension(monkeypatch):
    """Let the JupyterLab under test find dask-labextension's files wherever pip put them.

    A Lab looks for lab extensions under ``<sys.prefix>/share/jupyter`` and for server
    extensions' switches under ``<sys.prefix>/etc/jupyter`` of the Python it runs on. In a
    virtualenv made with ``--system-site-packages`` (CI's), dask-labextension is importable
    from the base environment, so ``pip install .[test]`` leaves it there, and its files
    stay under the base prefix, which the venv's Lab does not search: no dask sidebar, no
    ``dask:*`` commands, nothing to hand a dashboard to. The Lab inherits this environment
    (autouse: set before the ``lab`` fixture starts it); the Hub's servers get theirs from
    the spawner.
    """
    try:
        dist = metadata.distribution("dask-labextension")
    except metadata.PackageNotFoundError:
        return  # require_dask_labextension says so
    for file in dist.files or []:
        path = Path(dist.locate_file(file)).resolve()
        if path.parts[-3:] == ("labextensions", "dask-labextension", "package.json"):
            data, variable = path.parents[2], "JUPYTER_PATH"
        elif path.parts[-2:] == ("jupyter_server_config.d", "dask_labextension.json"):
            data, variable = path.parents[1], "JUPYTER_CONFIG_PATH"
        else:
            continue
        own = Path(sys.prefix).resolve() / ("share" if variable == "JUPYTER_PATH" else "etc")
        if data != own / "jupyter":
            paths = [p for p in os.environ.get(variable, "").split(os.pathsep) if p]
            monkeypatch.setenv(variable, os.pathsep.join([*paths, str(data)]))


def run_command(page, command, args=None):
    """Run a JupyterLab command through the app object the test server exposes."""
    return page.evaluate(
        "async ([id, args]) => { await window.jupyterapp.commands.execute(id, args); }",
        [command, args or {}],
    )


def new_notebook(page):
    """Open a new notebook and wait until its kernel is idle."""
    run_command(page, "notebook:create-new", {"kernelName": "python3"})
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            return w && w.context && w.context.isReady
                && w.sessionContext.session?.kernel?.status === 'idle';
        }""",
        timeout=60_000,
    )


def open_panel(page):
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jupyterhub-dask-gateway-sidebar"]')
    tab.wait_for()
    if not page.locator(SIDEBAR).is_visible():
        tab.click()
    page.locator(SIDEBAR).wait_for(state="visible")
    return page.locator(SIDEBAR)


def require_dask_labextension(page):
    """Fail with the reason, not a timeout, when the Lab did not load dask-labextension."""
    loaded = page.evaluate(
        "() => window.jupyterapp.commands.hasCommand('dask:populate-dashboard-url')"
    )
    assert loaded, (
        "dask-labextension is not loaded in the JupyterLab under test, so there is nothing "
        "to hand dashboards to; install it into the environment of "
        f"{sys.executable} (sys.prefix {sys.prefix})"
    )


def open_dask_sidebar(page):
    """Open dask-labextension's sidebar (the user's way: its tab) and return it."""
    sidebar = page.locator(DASK_SIDEBAR)
    if not sidebar.is_visible():
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="dask-dashboard-launcher"]').click()
    sidebar.wait_for(state="visible")
    return sidebar


def dask_user_settings(page):
    """dask-labextension's settings as the user (or the panel for them) saved them."""
    return page.evaluate(
        """async () => {
            const plugin = await window.jupyterapp.serviceManager.settings.fetch(
                'dask-labextension:plugin');
            return plugin.settings;
        }"""
    )


def card(panel, name):
    return panel.locator(f'.jp-DaskGateway-cluster[data-cluster-name="{name}"]')


def stat(card_locator, label):
    return card_locator.locator(
        f'xpath=.//dt[normalize-space()="{label}"]/following-sibling::dd'
    ).first


def set_theme(page, theme):
    run_command(page, "apputils:change-theme", {"theme": theme})
    light = "true" if theme == "JupyterLab Light" else "false"
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'")
    page.wait_for_timeout(300)  # let the theme's CSS variables settle before a screenshot


def snap(locator, artifacts, name, publish=False):
    """Screenshot a page or an element into the test's artifacts.

    With ``JHDG_PUBLISH_SCREENSHOTS=1`` the ``publish`` ones also replace the copies in
    docs/screenshots/ that the README links (so ordinary runs leave the tree clean).
    """
    path = artifacts / f"{name}.png"
    locator.screenshot(path=str(path))
    if publish and os.environ.get("JHDG_PUBLISH_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
    return path


def test_cluster_life_through_the_panel(page, lab, ui_gateway, artifacts):
    panel = open_panel(page)
    panel.get_by_text("No clusters yet.").wait_for()

    # create from the form: every option type is drawn; a bad value is explained
    panel.locator(".jp-Toolbar").get_by_text("New").click()
    form = panel.locator("form.jp-DaskGateway-form")
    form.get_by_label("Worker cores").wait_for()
    for label in (
        "Worker memory (GiB)",
        "Profile",
        "Verbose logs",
        "Note",
        "Environment variables",
    ):
        assert form.get_by_label(label).count() == 1, label
    form.get_by_label("Worker cores").fill("5")
    form.get_by_text("Must be at most 2").wait_for()
    form.get_by_label("Environment variables").fill("[1]")
    form.get_by_text("Enter a JSON object").wait_for()
    snap(panel, artifacts, "panel-new-cluster-form", publish=True)
    form.get_by_label("Worker cores").fill("1")
    form.get_by_label("Environment variables").fill('{"PANEL_TEST": "1"}')
    form.get_by_label("Profile").select_option("high-memory")
    form.get_by_role("button", name="Create").click()
    form.wait_for(state="detached")

    cards = panel.locator(".jp-DaskGateway-cluster")
    cards.first.wait_for()
    name = cards.first.get_attribute("data-cluster-name")
    this = card(panel, name)
    this.locator('.jp-DaskGateway-status[data-status="RUNNING"]').wait_for(timeout=90_000)
    assert this.locator(".jp-DaskGateway-owner").count() == 0  # our own: no owner line

    # scale to two workers and see them arrive
    this.get_by_role("button", name="Scale…").click()
    this.get_by_label("Number of workers").fill("2")
    this.get_by_role("group").get_by_role("button", name="Scale").click()
    workers = stat(this, "Workers")
    page.wait_for_function(
        "el => el.textContent.trim() === '2'", arg=workers.element_handle(), timeout=90_000
    )
    assert stat(this, "Cores").inner_text() == "2"
    assert stat(this, "Memory").inner_text() == "1.0 GiB"
    this.get_by_role("button", name="Scale…").click()  # fold the controls away

    # the same actions are in the card's context menu
    this.click(button="right")
    menu = page.locator(".lm-Menu")
    for label in ("Insert Dask Gateway Connection Code", "Stop Dask Gateway Cluster…"):
        menu.get_by_text(label).wait_for()
    page.keyboard.press("Escape")
    menu.wait_for(state="detached")

    this.click()  # select it: the screenshots show a selected card
    snap(panel, artifacts, "panel-light", publish=True)
    set_theme(page, "JupyterLab Dark")
    snap(panel, artifacts, "panel-dark", publish=True)
    set_theme(page, "JupyterLab Light")

    # insert the connection code into a new notebook and run it
    new_notebook(page)
    this.get_by_role("button", name="Insert code").click()
    cell = page.locator(".jp-NotebookPanel .jp-Cell.jp-mod-active")
    page.wait_for_function(
        "name => [...document.querySelectorAll('.jp-NotebookPanel .jp-Cell .cm-content')]"
        '.some(e => e.textContent.includes(`gateway.connect("${name}")`))',
        arg=name,
    )
    page.screenshot(path=str(artifacts / "notebook-inserted.png"))
    run_command(page, "notebook:run-cell-and-insert-below")
    page.wait_for_timeout(3000)
    page.screenshot(path=str(artifacts / "notebook-ran.png"))
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
    cell.locator(".jp-OutputArea-output").first.wait_for(timeout=90_000)
    output = cell.locator(".jp-OutputArea").inner_text()
    assert "Traceback" not in output and "Error" not in output, output
    # and compute on the cluster through it
    page.keyboard.type("client.submit(lambda x: x + 1, 41).result()")
    run_command(page, "notebook:run-cell")
    second = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(1)
    second.locator(".jp-OutputArea-output").first.wait_for(timeout=60_000)
    assert second.locator(".jp-OutputArea").inner_text().strip().endswith("42")
    snap(page, artifacts, "lab-notebook-connected", publish=True)

    # "Dashboard" opens a new browser tab on the cluster's dashboard and hands the URL
    # to dask-labextension, whose dashboard panes then follow this cluster
    require_dask_labextension(page)
    assert "browserDashboardCheck" not in dask_user_settings(page)
    open_panel(page)
    with page.context.expect_page() as popup_info:
        this.get_by_role("button", name="Dashboard").click()
    popup = popup_info.value
    dashboard_url = f"{ui_gateway.address}/clusters/{name}/status"
    popup.wait_for_load_state()
    assert popup.url == dashboard_url, popup.url
    popup.wait_for_function("() => document.title.includes('Dask')", timeout=30_000)
    popup.screenshot(path=str(artifacts / "dashboard.png"))
    popup.close()
    # what the user sees: dask-labextension's sidebar holds this cluster's dashboard...
    dask_sidebar = open_dask_sidebar(page)
    expect(dask_sidebar.locator(".dask-URLInput input")).to_have_value(
        dashboard_url, timeout=HAND_OFF_TIMEOUT
    )
    snap(dask_sidebar, artifacts, "dask-sidebar")
    # ...and checks it from the browser, which has the dashboard's credentials
    assert dask_user_settings(page).get("browserDashboardCheck") is True

    # stop it, confirming in the dialog, and watch it go
    open_panel(page)
    this.get_by_role("button", name="Stop").click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text(f"Stop cluster {name}?").wait_for()
    dialog.locator(".jp-mod-warn").click()
    this.wait_for(state="detached", timeout=90_000)
    panel.get_by_text("No clusters yet.").wait_for()


def test_panel_under_jupyterhub(hub_page, hub, artifacts):
    """The deployment users get: Hub login, the gateway as a Hub service, Hub tokens throughout.

    The relay authenticates with the server's Hub token, kernels use Gateway() with no
    arguments (JupyterHub auth), and the dashboard is served on the Hub's origin through
    its proxy and OAuth, so dask-labextension can show its panes.
    """
    page = hub_page
    panel = open_panel(page)
    panel.get_by_text("No clusters yet.").wait_for()
    panel.locator(".jp-Toolbar").get_by_text("New").click()
    form = panel.locator("form.jp-DaskGateway-form")
    form.get_by_role("button", name="Create").click()
    form.wait_for(state="detached")
    this = panel.locator(".jp-DaskGateway-cluster").first
    this.wait_for()
    name = this.get_attribute("data-cluster-name")
    this.locator('.jp-DaskGateway-status[data-status="RUNNING"]').wait_for(timeout=90_000)
    run_command(page, "dask-gateway:scale-cluster", {"name": name, "count": 2})
    page.wait_for_function(
        "el => el.textContent.trim() === '2'",
        arg=stat(this, "Workers").element_handle(),
        timeout=90_000,
    )

    # zero-config notebook: the inserted code runs with the Hub's environment and token
    new_notebook(page)
    run_command(page, "dask-gateway:insert-code", {"name": name})
    run_command(page, "notebook:run-cell-and-insert-below")
    page.keyboard.type("client.submit(lambda x: x + 1, 41).result()")
    run_command(page, "notebook:run-cell")
    second = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(1)
    second.locator(".jp-OutputArea-output").first.wait_for(timeout=90_000)
    first_output = page.locator(".jp-NotebookPanel .jp-CodeCell").first.inner_text()
    assert "Traceback" not in first_output, first_output
    assert second.locator(".jp-OutputArea").inner_text().strip().endswith("42")

    # the dashboard, on the Hub's origin behind its login
    open_panel(page)
    with page.context.expect_page() as popup_info:
        this.get_by_role("button", name="Dashboard").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    popup.wait_for_url(f"**/services/dask-gateway/clusters/{name}/status", timeout=30_000)
    popup.wait_for_function("() => document.title.includes('Dask')", timeout=30_000)
    popup.screenshot(path=str(artifacts / "dashboard.png"))
    popup.close()

    # and dask-labextension's panes for the same cluster: their frames show its plots
    require_dask_labextension(page)
    this.get_by_role("button", name="Lab panes").click()
    panes = page.locator(".dask-DaskDashboard-widget iframe")
    # dask-labextension's default layout: task stream, workers' memory, progress
    expect(panes).to_have_count(3, timeout=HAND_OFF_TIMEOUT)
    for i in range(3):
        expect(panes.nth(i)).to_have_attribute(
            "src", re.compile(rf"/services/dask-gateway/clusters/{name}/individual-")
        )
    page.wait_for_timeout(3000)  # let the Bokeh plots draw before the screenshot
    snap(page, artifacts, "lab-hub-dask-panes", publish=True)

    this.get_by_role("button", name="Stop").click()
    page.locator(".jp-Dialog .jp-mod-warn").click()
    this.wait_for(state="detached", timeout=90_000)
