"""The panel's Logs view and its admin view, in headless Chromium against a real gateway.

The first test is a user's: a cluster that runs and one whose scheduler crashes (a cluster
option the admin maps to a broken setting), the failure's reason on its card, and the
Logs view of each (events with their times, the scheduler's log lines, a worker's log
chosen in the toolbar, Refresh). The second is an admin's (a Basic-auth gateway admin):
the "All users" switch lists alice's and bob's clusters with their owners, the filter
narrows them to one user, the admin opens alice's logs and stops her cluster. A user who
is not an admin never sees the switch (first test).

Screenshots go to ``test-artifacts/<test>/``; with ``JHDG_PUBLISH_SCREENSHOTS=1`` the
Logs view and the admin view also replace docs/screenshots/logs-view.png and
panel-admin.png.
"""

from __future__ import annotations

import re
import textwrap
import time

import pytest
from test_panel import card, open_panel, run_command, snap

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.timeout(600)

PASSWORD = "ui-logs-test-password"  # every user's but the admin's
ADMIN = "carol"
ADMIN_PASSWORD = "ui-admin-password"
# A setting distributed cannot parse: the scheduler starts, logs a traceback and exits.
BROKEN_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING_INTERVAL": "not-a-duration"}

GATEWAY_CONFIG = textwrap.dedent(
    f"""
    c.BasicAuthenticator.password = {PASSWORD!r}
    c.BasicAuthenticator.admin_users = {{{ADMIN!r}}}
    c.BasicAuthenticator.passwords = {{{ADMIN!r}: {ADMIN_PASSWORD!r}}}

    from jupyterhub_dask_gateway.options import Bool, Options

    def _options_handler(options):
        return {{"environment": {BROKEN_ENV!r}}} if options.broken else {{}}

    c.Backend.cluster_options = Options(
        Bool("broken", False, label="Break the scheduler"),
        handler=_options_handler,
    )
    """
)


@pytest.fixture
def ui_gateway(make_gateway):
    """A real gateway with an admin (carol) and an option that breaks the scheduler."""
    return make_gateway(extra=GATEWAY_CONFIG)


@pytest.fixture
def lab_login():
    """The Lab's relay logs in as alice (the admin test parametrizes it to carol)."""
    return ("alice", PASSWORD)


def logs_view(page, name):
    return page.locator(f"#jupyterhub-dask-gateway-logs-{name}")


def event_row(view, kind):
    return view.locator(f'.jp-DaskGateway-events tr[data-kind="{kind}"]').first


def create_from_form(panel, broken=False):
    """New → (Break the scheduler) → Create; the new cluster's name."""
    before = set(
        panel.locator(".jp-DaskGateway-cluster").evaluate_all(
            "cards => cards.map(c => c.dataset.clusterName)"
        )
    )
    panel.locator(".jp-Toolbar").get_by_text("New").click()
    form = panel.locator("form.jp-DaskGateway-form")
    form.get_by_label("Break the scheduler").wait_for()
    if broken:
        form.get_by_label("Break the scheduler").check()
    form.get_by_role("button", name="Create").click()
    form.wait_for(state="detached")
    names = panel.page.wait_for_function(
        """before => {
            const names = [...document.querySelectorAll('.jp-DaskGateway-cluster')]
                .map(c => c.dataset.clusterName).filter(n => !before.includes(n));
            return names.length ? names : null;
        }""",
        arg=sorted(before),
    ).json_value()
    return names[0]


def test_logs_of_a_running_and_a_failed_cluster(page, lab, ui_gateway, artifacts):
    panel = open_panel(page)
    panel.get_by_text("No clusters yet.").wait_for()
    # alice is no admin: no switch to everyone's clusters
    assert panel.get_by_role("switch").count() == 0

    good = create_from_form(panel)
    this = card(panel, good)
    this.locator('.jp-DaskGateway-status[data-status="RUNNING"]').wait_for(timeout=90_000)

    bad = create_from_form(panel, broken=True)
    failed = card(panel, bad)
    failed.locator('.jp-DaskGateway-status[data-status="FAILED"]').wait_for(timeout=120_000)
    reason = ui_gateway.api_json(f"cluster-details/{bad}", password=PASSWORD)["reason"]
    assert reason
    # the reason is text on the card
    expect(failed.locator(".jp-DaskGateway-reason")).to_have_text(f"Failed: {reason}")
    snap(panel, artifacts, "panel-failed-cluster")

    # the running cluster's Logs view: a main-area tab with events and the scheduler log
    this.get_by_role("button", name="Logs").click()
    view = logs_view(page, good)
    view.wait_for(state="visible")
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    expect(tab).to_contain_text("Logs")
    for kind in ("created", "started"):
        row = event_row(view, kind)
        row.wait_for()
        assert row.locator("time").get_attribute("datetime")  # each event has its time
    log = view.locator("pre.jp-DaskGateway-log")
    expect(log).to_have_attribute("aria-label", "Log of Scheduler")
    expect(log).to_contain_text("Scheduler at", timeout=30_000)

    # a worker: Refresh shows its events, the toolbar's chooser its log
    run_command(page, "dask-gateway:scale-cluster", {"name": good, "count": 1})
    refresh = view.locator(".jp-Toolbar").get_by_role("button", name="Refresh")
    worker_row = event_row(view, "worker_running")
    deadline = time.monotonic() + 90
    while worker_row.count() == 0:
        assert time.monotonic() < deadline, "no worker_running event after Refresh"
        refresh.click()
        page.wait_for_timeout(1000)
    worker = worker_row.locator(".jp-DaskGateway-event-worker").get_attribute("title")
    process = view.get_by_label("Process", exact=True)
    expect(process.locator(f'option[value="{worker}"]')).to_have_count(1)
    process.select_option(worker)
    expect(log).to_have_attribute("aria-label", re.compile("^Log of Worker "))
    expect(log).to_contain_text("Registered to", timeout=30_000)
    process.select_option("scheduler")
    expect(log).to_contain_text("Scheduler at")
    snap(view, artifacts, "logs-view", publish=True)

    # the failed cluster's: its reason, the failure among its events, the traceback
    open_panel(page)
    failed.get_by_role("button", name="Logs").click()
    failed_view = logs_view(page, bad)
    failed_view.wait_for(state="visible")
    expect(failed_view.get_by_role("note")).to_have_text(f"Failed: {reason}")
    event_row(failed_view, "created").wait_for()
    failed_row = event_row(failed_view, "failed")
    failed_row.wait_for()
    expect(failed_row.locator(".jp-DaskGateway-event-message")).to_contain_text(
        reason.split(":")[0]
    )
    expect(failed_view.locator("pre.jp-DaskGateway-log")).to_contain_text("ValueError")
    snap(failed_view, artifacts, "logs-view-failed")

    # the Logs command reopens the same tab rather than a second one
    run_command(page, "dask-gateway:show-logs", {"name": good})
    assert page.locator(".jp-DaskGateway-logs-widget").count() == 2
    run_command(page, "dask-gateway:stop-cluster", {"name": good, "confirm": False})


@pytest.mark.parametrize("lab_login", [(ADMIN, ADMIN_PASSWORD)])
def test_admin_sees_everyones_clusters_and_stops_alices(page, lab, ui_gateway, artifacts):
    with (
        ui_gateway.gateway(user="alice", password=PASSWORD) as alice,
        ui_gateway.gateway(user="bob", password=PASSWORD) as bob,
    ):
        alices = alice.submit()
        bobs = bob.submit()
        try:
            panel = open_panel(page)
            panel.get_by_text("No clusters yet.").wait_for()  # the admin has none of hers
            switch = panel.get_by_role("switch", name="All users")
            expect(switch).not_to_be_checked()
            switch.click()
            expect(switch).to_be_checked()
            alice_card, bob_card = card(panel, alices), card(panel, bobs)
            for this, owner in ((alice_card, "alice"), (bob_card, "bob")):
                this.wait_for()
                expect(this.locator(".jp-DaskGateway-owner")).to_have_text(f"Owner: {owner}")
                this.locator('.jp-DaskGateway-status[data-status="RUNNING"]').wait_for(
                    timeout=90_000
                )

            # the filter by user
            user_filter = panel.get_by_label("Filter by user")
            user_filter.select_option("bob")
            alice_card.wait_for(state="detached")
            assert bob_card.is_visible()
            user_filter.select_option(label="Everyone")
            alice_card.wait_for()
            snap(panel, artifacts, "panel-admin", publish=True)

            # the admin opens alice's logs
            alice_card.get_by_role("button", name="Logs").click()
            view = logs_view(page, alices)
            event_row(view, "created").wait_for()
            expect(view.locator("pre.jp-DaskGateway-log")).to_contain_text("Scheduler at")
            expect(view.locator(".jp-DaskGateway-logs-meta")).to_contain_text("Owner: alice")

            # and stops her cluster, saying whose it is
            open_panel(page)
            alice_card.get_by_role("button", name="Stop").click()
            dialog = page.locator(".jp-Dialog")
            dialog.get_by_text(f"Stop alice's cluster {alices}?").wait_for()
            dialog.locator(".jp-mod-warn").click()
            alice_card.wait_for(state="detached", timeout=90_000)
            assert bob_card.is_visible()
            status = ui_gateway.api_json(f"clusters/{alices}", password=PASSWORD)["status"]
            assert status in ("STOPPING", "STOPPED")
        finally:
            for gw, name in ((alice, alices), (bob, bobs)):
                try:
                    gw.stop_cluster(name)
                except Exception:  # already stopped
                    pass
