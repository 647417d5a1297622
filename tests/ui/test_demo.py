"""The README's demo, as a newcomer runs it: ``demo/jupyterhub_config.py`` itself, as root.

The Hub runs from the demo's own config file (not a test copy) in a fresh state
directory, the way ``scripts/demo.sh`` starts it. Alice logs in through the Hub's
form in Chromium, creates a cluster from the panel and computes on it from a
notebook; her single-user server, her kernel and her scheduler all run as her own
account. Nothing here sets ``--allow-root`` or any other setting the demo lacks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

import psutil
import pytest
import requests

from helpers import (
    ensure_account,
    kill_all,
    open_to_accounts,
    port_open,
    processes_of,
    processes_under,
    start_logged,
    terminate,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "demo" / "jupyterhub_config.py"
DEMO_USERS = ("alice", "bob", "admin")
# What demo/jupyterhub_config.py binds: the Hub's proxy, its API, the gateway, its proxy.
DEMO_PORTS = (8000, 8081, 8765, 8786)


@pytest.fixture
def demo_hub(tmp_path, accounts):
    for user in DEMO_USERS:
        home = ensure_account(user).pw_dir
        # A newcomer's first login: no JupyterLab workspace left by earlier tests (which
        # would reopen their notebooks, with a kernel dialog over everything).
        shutil.rmtree(os.path.join(home, ".jupyter", "lab", "workspaces"), ignore_errors=True)
    busy = [p for p in DEMO_PORTS if port_open(p)]
    if busy:
        pytest.fail(f"the demo's ports {busy} are in use; stop whatever holds them")
    state = tmp_path / "demo-state"
    state.mkdir()
    state.chmod(0o711)  # what demo.sh does to its state directory
    open_to_accounts(state)
    log_path = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "DASK_"))}
    proc = start_logged(
        [sys.executable, "-m", "jupyterhub", "-f", str(DEMO_CONFIG)],
        log_path,
        cwd=state,
        env=env,
        umask=0o077,
    )

    def up():
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-3000:])
        try:
            return requests.get("http://127.0.0.1:8000/hub/api/", timeout=5).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, 90, what="the demo Hub")
        yield proc, log_path
    finally:
        terminate(proc, 45)
        kill_all(processes_under(str(state)) + processes_of(DEMO_USERS))


def test_demo_as_root(browser, demo_hub, artifacts):
    from test_panel import open_panel

    proc, log_path = demo_hub
    alice = pwd.getpwnam("alice")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto("http://127.0.0.1:8000/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", "demo")
        page.click("#login_submit")
        page.wait_for_url("**/user/alice/lab**", timeout=90_000)
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)

        # The single-user server runs as alice (no --allow-root anywhere).
        servers = [
            p
            for p in psutil.process_iter(["cmdline", "uids"])
            if "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or [])
        ]
        assert servers and {p.info["uids"].real for p in servers} == {alice.pw_uid}

        # The panel creates a cluster from the demo's options.
        panel = open_panel(page)
        panel.get_by_text("No clusters yet.").wait_for(timeout=60_000)
        panel.locator(".jp-Toolbar").get_by_text("New").click()
        form = panel.locator("form.jp-DaskGateway-form")
        form.get_by_role("button", name="Create").click()
        form.wait_for(state="detached")
        card = panel.locator(".jp-DaskGateway-cluster").first
        card.locator('.jp-DaskGateway-status[data-status="RUNNING"]').wait_for(timeout=90_000)
        name = card.get_attribute("data-cluster-name")

        # A notebook (from the launcher, as a user would) computes on it, zero-config.
        page.keyboard.press("Control+Shift+L")  # a new launcher
        page.locator('.jp-LauncherCard[data-category="Notebook"]:visible').first.click()
        cell = page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
        cell.wait_for()
        # Run only once the kernel is up: a cell run while it starts may be dropped.
        page.locator(".jp-StatusBar-Widget").get_by_text("Idle").first.wait_for(timeout=120_000)
        cell.click()
        page.keyboard.type(
            "import os; from dask_gateway import Gateway\n"
            f"cluster = Gateway().connect({name!r}); cluster.scale(1)\n"
            "client = cluster.get_client(); client.wait_for_workers(1, timeout=120)\n"
            "print('result', client.submit(lambda x: x + 1, 41).result(), "
            "client.run_on_scheduler(os.getuid), os.getuid(), "
            "sorted(set(client.run(os.getuid).values())))"
        )
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-NotebookPanel .jp-OutputArea-output").first
        output.wait_for(timeout=180_000)
        wait_for(lambda: "result" in output.inner_text(), 120, what="the cell's output")
        u = alice.pw_uid
        assert output.inner_text().strip() == f"result 42 {u} {u} [{u}]", output.inner_text()

        card.get_by_role("button", name="Stop").click()
        page.locator(".jp-Dialog .jp-mod-warn").click()
        card.wait_for(state="detached", timeout=90_000)
    finally:
        page.screenshot(path=str(artifacts / "last.png"))
        (artifacts / "demo.log").write_text(log_path.read_text(errors="replace"))
        context.close()
    assert "--allow-root" not in log_path.read_text(errors="replace")
