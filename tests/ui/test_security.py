"""What a hostile web page can do to a logged-in Hub user, in Chromium: nothing.

- Another site (``http://localhost:<port>``, while the Hub is ``http://127.0.0.1:<port>``)
  auto-submits a form and fetches to the gateway's API with the user's cookies: no cluster
  is created.
- A dashboard page the cluster owner controls (a route alice adds to her own scheduler),
  opened by an admin, cannot read the gateway's API, the Hub's API, another cluster's
  dashboard, or any Hub page through a frame or a popup; the real dashboard still renders
  and streams over its websocket.
"""

from __future__ import annotations

import http.server
import sys
import threading

import cloudpickle
import pytest

# add_evil_route runs on a scheduler, which cannot import this module: ship it whole.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EVIL_PAGE = """<!doctype html><html><head><title>evil</title></head><body><script>
(async () => {
  const out = {};
  async function probe(key, url) {
    try {
      const r = await fetch(url, {credentials: "include"});
      out[key] = r.status + ":" + (await r.text()).slice(0, 200);
    } catch (e) { out[key] = "blocked"; }
  }
  await probe("api", "/services/dask-gateway/api/v1/clusters/");
  await probe("details", "/services/dask-gateway/api/v1/cluster-details/");
  await probe("hub", "/hub/api/user");
  await probe("other", "/services/dask-gateway/clusters/OTHER/status");
  const frame = document.createElement("iframe");
  frame.src = "/hub/home";
  document.body.appendChild(frame);
  const popup = window.open("/hub/home");
  await new Promise(r => setTimeout(r, 3000));
  try { out.frame = frame.contentDocument ? frame.contentDocument.body.innerHTML : "none"; }
  catch (e) { out.frame = "blocked"; }
  try { out.popup = popup && popup.document ? popup.document.body.innerHTML : "none"; }
  catch (e) { out.popup = "blocked"; }
  window.__results = out;
  document.title = "done";
})();
</script></body></html>"""


def add_evil_route(html, dask_scheduler=None):
    """Runs on alice's scheduler: a page of hers, served by her dashboard."""
    from tornado.web import RequestHandler

    class Evil(RequestHandler):
        def get(self):
            self.set_header("Content-Type", "text/html")
            self.write(html)

    dask_scheduler.http_application.add_handlers(r".*", [(r"/evil", Evil)])


@pytest.fixture(scope="module")
def security_hub(make_hub):
    return make_hub(hub_config='c.Authenticator.admin_users = {"hubadmin"}\n')


def hub_login(page, hub, user, start):
    """Log in through the Hub's form from ``start`` (a gateway page behind OAuth)."""
    page.goto(start)
    page.fill("#username_input", user)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(start.split("?")[0] + "*", timeout=60_000)


def test_another_site_cannot_create_clusters(browser, security_hub):
    hub = security_hub
    token = hub.new_token("alice")["token"]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    api = f"{hub.gateway_url}/api/v1/clusters/"
    attack = f"""<!doctype html><body>
      <form id=f method=POST action="{api}" enctype="text/plain">
        <input name='{{"cluster_options": {{"shared_groups": "evil"}}, "x": "' value='"}}'>
      </form>
      <script>
        fetch("{api}", {{method: "POST", credentials: "include", mode: "no-cors",
                        headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}})
          .finally(() => {{ document.title = "fetched"; document.getElementById("f").submit(); }});
      </script></body>"""

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(attack.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # alice has a fresh session with the gateway (cookies at their most permissive)
        hub_login(page, hub, "alice", f"{hub.gateway_url}/clusters/none/status")
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.goto(f"http://localhost:{server.server_address[1]}/")
        # the fetch went out, then the form (whose answer the browser now shows)
        page.wait_for_url(f"{api}*", timeout=30_000)
        assert sum("401" in line for line in console) == 2, console
        assert page.evaluate("() => document.body.innerText").find('"error"') >= 0
    finally:
        server.shutdown()
        context.close()
    with hub.gateway(token) as alice:
        assert alice.list_clusters() == []
    assert "Created cluster" not in hub.log()


def test_a_dashboard_cannot_act_as_its_viewer(browser, security_hub):
    hub = security_hub
    token = hub.new_token("alice")["token"]
    with hub.gateway(token) as alice, alice.new_cluster() as cluster:
        with hub.gateway(hub.new_token("bob")["token"]) as bob, bob.new_cluster() as other:
            with cluster.get_client(set_as_default=False) as client:
                client.run_on_scheduler(add_evil_route, EVIL_PAGE.replace("OTHER", other.name))
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(30_000)
            try:
                evil = f"{hub.gateway_url}/clusters/{cluster.name}/evil"
                hub_login(page, hub, "hubadmin", evil)
                page.wait_for_function("() => document.title === 'done'", timeout=30_000)
                results = page.evaluate("() => window.__results")
                for key in ("api", "details", "hub", "other"):
                    assert results[key] == "blocked", (key, results[key])
                for key in ("frame", "popup"):
                    assert "jupyterhub" not in results[key].lower(), (key, results[key])
                    assert results[key] in ("blocked", "none", ""), (key, results[key][:200])

                # The real dashboard, for the same admin: renders and streams.
                frames = []
                page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
                page.goto(f"{hub.gateway_url}/clusters/{cluster.name}/status")
                page.wait_for_function("() => document.title.includes('Dask')")
                page.wait_for_selector(".bk-Canvas, canvas", timeout=30_000)
                for _ in range(150):  # up to 30 s; playwright delivers events while it waits
                    if frames:
                        break
                    page.wait_for_timeout(200)
                assert frames, "bokeh's websocket did not stream"
            finally:
                context.close()
    assert token not in hub.log()
