"""Cost of the Hub server watch and of event recording, on the gateway's event loop.

Usage: ``python bench/hub_watch.py [--users 1000] [--active 500] [--owners 100,1000]
[--runs 7] [--events 10000]``

A fake Hub API (tornado, in a child process on 127.0.0.1, so that its work is not
counted in ours) answers like JupyterHub for ``--users`` users of whom ``--active``
have a running server: ``GET /users?state=active`` and ``GET /groups`` paginated with
JupyterHub's model (``items`` and ``_pagination`` with ``next``, 200 per page, see
``paginated_model`` in jupyterhub/apihandlers/base.py) when asked with
``Accept: application/jupyterhub-pagination+json``, and ``GET /users/<name>``.

Here a real ``ClusterManager`` (FakeBackend, in-memory sqlite store, as tests/fakes.py)
holds one RUNNING cluster for each of M distinct owners (``--owners``; every other owner
has a server), and ``ServerWatch.poll_once`` is timed, wall clock and this process's
CPU, the median of ``--runs``:

* first poll: a new watch, which asks ``GET /users/<name>`` of every owner without a
  server (once per owner, when first seen so);
* steady poll: the same watch again, one paginated ``GET /users?state=active``;
* with ``access_roles``: a steady poll that also checks every owner's roles
  (``GET /groups`` + one ``GET /users/<name>`` per owner), which runs once every
  ``hub_access_check_period``.

The share of one core is CPU per poll / period, at the default ``hub_poll_period``
(15 s) and ``hub_access_check_period`` (60 s): the fraction of the event loop's time
the watch takes, hence at most the fraction of API requests per second it can cost a
saturated gateway. Then ``ClusterManager._record`` (memory ring, sqlite row, trims,
the metrics listener) per event. Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGINATION = "application/jupyterhub-pagination+json"
PAGE = 200
POLL_PERIOD = 15.0  # hub_poll_period default
ACCESS_PERIOD = 60.0  # hub_access_check_period default


# --- the fake Hub (child process) ---------------------------------------------------------
def user_model(i: int, active: bool) -> dict:
    name = f"user{i:04d}"
    server = {
        "name": "",
        "ready": True,
        "stopped": False,
        "pending": None,
        "url": f"/user/{name}/",
        "progress_url": f"/hub/api/users/{name}/server/progress",
        "started": "2026-12-02T09:00:00.000000Z",
        "last_activity": "2026-12-02T09:30:00.000000Z",
        "state": None,
        "user_options": {},
    }
    return {
        "kind": "user",
        "name": name,
        "admin": False,
        "roles": ["user"] + (["dask-users"] if i % 3 else []),
        "groups": [f"group{i % 10}"],
        "server": f"/user/{name}/" if active else None,
        "pending": None,
        "created": "2026-11-01T09:00:00.000000Z",
        "last_activity": "2026-12-02T09:30:00.000000Z",
        "servers": {"": server} if active else {},
    }


def serve(users: int, active: int) -> None:
    from tornado.ioloop import IOLoop
    from tornado.netutil import bind_sockets
    from tornado.web import Application, HTTPError, RequestHandler

    models = {}
    for i in range(users):
        m = user_model(i, active=(i % 2 == 0 and i // 2 < active))
        models[m["name"]] = m
    # Every user has access (directly, or through their group), so the check stops none.
    groups = [
        {
            "kind": "group",
            "name": f"group{g}",
            "roles": ["dask-users"],
            "users": [],
            "properties": {},
        }
        for g in range(10)
    ]

    class Base(RequestHandler):
        def paginated(self, items):
            offset = int(self.get_argument("offset", "0"))
            limit = min(int(self.get_argument("limit", str(PAGE))), PAGE)
            page = items[offset : offset + limit]
            if PAGINATION not in self.request.headers.get("Accept", ""):
                return self.finish(json.dumps(page))
            data = {
                "items": page,
                "_pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": len(items),
                    "next": None,
                },
            }
            next_offset = offset + limit
            if next_offset < len(items):  # as jupyterhub's paginated_model
                parsed = urlparse(self.request.full_url())
                query = parse_qs(parsed.query, keep_blank_values=True)
                query["offset"], query["limit"] = [next_offset], [limit]
                url = urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
                data["_pagination"]["next"] = {"offset": next_offset, "limit": limit, "url": url}
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(data))

    class Users(Base):
        def get(self):
            items = list(models.values())
            if self.get_argument("state", "") == "active":
                items = [m for m in items if m["servers"]]
            self.paginated(items)

    class OneUser(Base):
        def get(self, name):
            if name not in models:
                raise HTTPError(404)
            self.finish(json.dumps(models[name]))

    class Groups(Base):
        def get(self):
            self.paginated(groups)

    app = Application(
        [
            (r"/hub/api/users", Users),
            (r"/hub/api/users/([^/]+)", OneUser),
            (r"/hub/api/groups", Groups),
        ]
    )
    sockets = bind_sockets(0, "127.0.0.1")
    from tornado.httpserver import HTTPServer

    server = HTTPServer(app)
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    IOLoop.current().start()


# --- the measurements --------------------------------------------------------------------
async def make_manager(owners: int):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from cryptography.fernet import Fernet

    from fakes import FakeBackend, FakeClock
    from jupyterhub_dask_gateway.metrics import GatewayMetrics
    from jupyterhub_dask_gateway.models import Cluster, JobStatus
    from jupyterhub_dask_gateway.quotas import Quotas
    from jupyterhub_dask_gateway.reconcile import ClusterManager
    from jupyterhub_dask_gateway.store import Store

    clock = FakeClock()
    manager = ClusterManager(
        backend=FakeBackend(),
        store=Store("sqlite://", [Fernet.generate_key()]),
        quotas=Quotas(),
        clock=clock,
        api_url="http://127.0.0.1:1/api/v1",
        check_timeouts_period=3600,
    )
    metrics = GatewayMetrics(manager, "FakeBackend")
    manager.events.listeners.append(metrics.on_event)
    await manager.start()
    for i in range(owners):
        c = Cluster(
            name=f"c{i:05d}",
            username=f"user{i:04d}",
            token="t",
            tls_cert="",
            tls_key="",
            status=JobStatus.RUNNING,
        )
        manager.clusters[c.name] = c
        manager.store.add_cluster(c)
    return manager, clock


async def timed(coro_fn):
    w, c = time.perf_counter(), time.process_time()
    await coro_fn()
    return time.perf_counter() - w, time.process_time() - c


def median(samples):
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))


async def bench_watch(api_url: str, owners: int, runs: int) -> dict:
    from jupyterhub_dask_gateway.hub_watch import ServerWatch

    manager, clock = await make_manager(owners)
    log = logging.getLogger("bench")
    log.disabled = True
    first, steady, access = [], [], []
    watches = []
    for _ in range(runs):
        watch = ServerWatch(
            manager, api_url, "token", grace=300, period=POLL_PERIOD, log=log, clock=clock
        )
        watches.append(watch)
        first.append(await timed(watch.poll_once))
        # every page read: the even-numbered owners have a server, the others were asked of
        assert len(watch._seen_active) == (owners + 1) // 2, len(watch._seen_active)
        assert len(watch._inactive_since) == owners // 2
        await watch.poll_once()  # warm
        steady.append(await timed(watch.poll_once))
        watch.access_roles = {"admin", "dask-users"}
        watch._access_checked = float("-inf")  # due now
        access.append(await timed(watch.poll_once))
    stopped = sum(1 for c in manager.clusters.values() if not c.active)
    for w in watches:
        w._http.close()
    await manager.shutdown(stop_clusters=False)
    manager.store.close()
    return {
        "first": median(first),
        "steady": median(steady),
        "access": median(access),
        "stopped": stopped,
    }


async def bench_events(n: int, clusters: int = 10) -> tuple[float, float]:
    from jupyterhub_dask_gateway.models import Cluster

    manager, clock = await make_manager(0)
    cs = []
    for i in range(clusters):
        c = Cluster(name=f"e{i}", username="alice", token="t", tls_cert="", tls_key="")
        manager.clusters[c.name] = c
        manager.store.add_cluster(c)
        cs.append(c)
    w, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        clock.advance(0.001)
        manager._record(cs[i % clusters], "scaled", f"Scaled to {i % 7} workers by alice")
    w, cpu = time.perf_counter() - w, time.process_time() - cpu
    await manager.shutdown(stop_clusters=False)
    manager.store.close()
    return w / n, cpu / n


def ms(x):
    return f"{x * 1000:.1f} ms"


def start_hub(args) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.users), str(args.active)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/hub/api"


async def main(args, api_url: str) -> None:
    rows = []
    for m in args.owners:
        r = await bench_watch(api_url, m, args.runs)
        rows.append((m, r))
        assert r["stopped"] == 0, "the access check stopped clusters"
    ev_wall, ev_cpu = await bench_events(args.events)

    print(
        f"Fake Hub: {args.users} users, {args.active} with a server, pages of {PAGE}; "
        f"median of {args.runs} runs; CPU = this process (the Hub's work not counted).\n"
    )
    print("| owners (clusters) | poll | wall | CPU | share of one core |")
    print("| --- | --- | --- | --- | --- |")
    for m, r in rows:
        (fw, fc), (sw, sc), (aw, ac) = r["first"], r["steady"], r["access"]
        steady_share = sc / POLL_PERIOD
        access_share = max(ac - sc, 0) / ACCESS_PERIOD
        print(
            f"| {m} | first (GET /users/<name> per owner without a server) | {ms(fw)} | "
            f"{ms(fc)} | once |"
        )
        print(
            f"| {m} | steady, every {POLL_PERIOD:g} s | {ms(sw)} | {ms(sc)} | {steady_share:.3%} |"
        )
        print(
            f"| {m} | with access_roles check, every {ACCESS_PERIOD:g} s | {ms(aw)} | "
            f"{ms(ac)} | +{access_share:.3%} |"
        )
        print(
            f"| {m} | **total at the defaults** (loop time, ≤ API req/s lost) | | | "
            f"**{steady_share + access_share:.3%}** |"
        )
    print(
        f"| events | `_record` ×{args.events} (in-memory sqlite, metrics listener) | "
        f"{ev_wall * 1e6:.0f} µs/event | {ev_cpu * 1e6:.0f} µs/event | per state change |"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--active", type=int, default=500)
    p.add_argument("--owners", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--events", type=int, default=10000)
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    hub, url = start_hub(args)
    try:
        asyncio.run(main(args, url))
    finally:
        hub.kill()  # the child we started, by its pid
        hub.wait()
