"""Benchmark this gateway against dask-gateway-server 2026.3 and the physical limit.

Usage: ``python bench/run.py [--quick] [--runs N] [--only name,...] [--no-doc]``

Both gateways run side by side on 127.0.0.1, started from their CLIs, and are
driven by the same unmodified ``dask-gateway`` client from this process. The
reference is installed by ``harness.ensure_reference`` into ``bench/.venv-reference``.
Phases (``--only`` takes their names):

``start``     new_cluster() latency (client call to RUNNING) and scale(1) until the
              worker has joined, interleaved per run; a plain ``LocalCluster`` as the limit;
              ours once more with ``warm_pool_size = 0`` for context; the RSS of one
              cluster (scheduler + 1 worker).
``transfer``  a 10k-task ``client.map`` and a 200 MB gather (4 x 50 MB of random bytes)
              through each gateway's proxy and over a direct TLS connection to the same
              scheduler (its ``tls://`` address, the cluster's own credentials), measured in
              back-to-back pairs, plus a ``LocalCluster`` over plain TCP.
``list``      list_clusters() with 10 and 100 RUNNING clusters of one user, and the
              gateways' memory per cluster. The clusters' "schedulers" are a shell stub
              that sends the scheduler's heartbeat with curl (so each cluster is RUNNING
              and listed with its TLS certificate and key, as real ones are): 200 real
              schedulers (~100 MB each) do not fit this machine beside everything else.
              Limit: a bare server returning the same bytes (the client's own cost).
``api``       requests per second of concurrent ``GET /api/v1/clusters/`` with one
              cookie session (as the client does), through the public port.
``rss``       idle resident memory of each gateway (gateway process, proxy, warm pool).
``sigkill``   SIGKILL the gateway process while a client is connected, restart it at
              once, and time until (a) the connected client computes, (b) the REST API
              answers, (c) a new client connects to the cluster and computes.

The markdown table is printed and written into docs/performance.md (unless
``--no-doc``); raw samples go to bench/results/. Every process started here is
killed at the end, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import harness as h
from harness import OURS, REF, log, median

LIMIT = "limit"
COLD = "ours, warm_pool_size=0"
# Listing context: ours issuing the reference's key type, and the limit for its bigger answer.
RSA_KEYS = "ours, tls_key_type=rsa-2048"
LIMIT_RSA = "limit, rsa-2048 answer"
PHASES = ("rss", "start", "transfer", "sigkill", "list", "api")

# Both gateways' clusters: room for 2 x 200 MB of blobs on the worker without spilling, and
# no root-task queuing, so the task benchmark measures throughput (all tasks go to the
# worker at once) rather than one scheduler round trip per task (~4 ms here, ~40 s for 10k).
SATURATION = "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"
CLUSTER_CONFIG = f"""
c.ClusterConfig.worker_memory = "2 G"
c.ClusterConfig.environment = {{{SATURATION!r}: "inf"}}
"""


def inc(x):
    return x + 1


def make_blob(i, nbytes):
    return os.urandom(nbytes)


def all_finished(futures) -> bool:
    for f in futures:
        if f.status == "error":
            raise h.Fatal(f"task failed: {f.exception()}")
    return all(f.status == "finished" for f in futures)


class Results:
    """Samples per (metric, who); ``who`` is ours / reference / limit or a free label."""

    def __init__(self):
        self.samples: dict[str, dict[str, list]] = {}
        self.notes: list[str] = []

    def add(self, metric: str, who: str, value) -> None:
        self.samples.setdefault(metric, {}).setdefault(who, []).append(value)

    def med(self, metric: str, who: str):
        return median(self.samples.get(metric, {}).get(who, []))

    def note(self, text: str) -> None:
        log(text)
        self.notes.append(text)


# --- phase: idle memory ---------------------------------------------------------------------------


def phase_rss(servers, res: Results) -> None:
    h.settle(max_wait=10)
    time.sleep(1)
    for s in servers.values():
        parts = s.service_pids()
        for part, pids in parts.items():
            if part == "warm pool" and s.label == REF:
                continue
            res.add(f"rss idle: {part}", s.label, h.rss(pids))
        res.add("rss idle: gateway + proxy", s.label, h.rss(parts["gateway"] + parts["proxy"]))


# --- phase: cluster start -------------------------------------------------------------------------


def start_once(server, res: Results, measure_rss: bool) -> None:
    with server.gateway() as gw:
        t0 = time.perf_counter()
        cluster = gw.new_cluster()
        res.add("new_cluster()", server.label, time.perf_counter() - t0)
        try:
            client = cluster.get_client(set_as_default=False)
            t0 = time.perf_counter()
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)
            res.add("+1 worker ready", server.label, time.perf_counter() - t0)
            if measure_rss:
                time.sleep(0.5)
                res.add(
                    "rss per cluster (scheduler + 1 worker)",
                    server.label,
                    h.rss(server.cluster_pids(cluster.name)),
                )
            client.close()
        finally:
            cluster.shutdown()


def limit_cluster(n_workers: int):
    """The limit: a plain LocalCluster shaped like the gateways' clusters (1 thread, 2 GiB)."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        processes=True,
        threads_per_worker=1,
        memory_limit="2 GiB",
        dashboard_address="127.0.0.1:0",
    )


def local_cluster_once(res: Results) -> None:
    from distributed import Client

    t0 = time.perf_counter()
    cluster = limit_cluster(n_workers=0)
    res.add("new_cluster()", LIMIT, time.perf_counter() - t0)
    client = Client(cluster, set_as_default=False)
    try:
        t0 = time.perf_counter()
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        res.add("+1 worker ready", LIMIT, time.perf_counter() - t0)
    finally:
        client.close()
        cluster.close()


def phase_start(servers, res: Results, runs: int, cold) -> None:
    """Interleaved runs; ``cold`` is our gateway with ``warm_pool_size = 0`` (for context)."""
    order = [servers[OURS], servers[REF], cold]
    for i in range(runs):
        for server in order[i % 3 :] + order[: i % 3]:
            h.settle()
            start_once(server, res, measure_rss=(i == 0 and server is not cold))
        h.settle()
        local_cluster_once(res)
        gc.collect()


# --- phase: data transfer -------------------------------------------------------------------------


def phase_transfer(
    servers,
    res: Results,
    runs: int,
    n_tasks: int,
    blob_mb: int,
    map_runs: int,
    gathers_per_run: int,
) -> None:
    import dask
    from distributed import Client

    opened = []  # (kind, object) to close at the end
    paths = {}  # label -> distributed Client
    try:
        for server in servers.values():
            gw = server.gateway()
            opened.append(("gateway", gw))
            cluster = gw.new_cluster()
            opened.append(("cluster", cluster))
            cluster.scale(1)
            proxied = cluster.get_client(set_as_default=False)
            opened.append(("client", proxied))
            proxied.wait_for_workers(1, timeout=60)
            address = proxied.scheduler_info()["address"]
            direct = Client(address, security=cluster.security, set_as_default=False)
            opened.append(("client", direct))
            paths[f"{server.label} via proxy"] = proxied
            paths[f"{server.label} direct"] = direct
        with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
            local = limit_cluster(n_workers=1)
        opened.append(("cluster", local))
        lclient = Client(local, set_as_default=False)
        opened.append(("client", lclient))
        paths["LocalCluster (tcp, no TLS)"] = lclient

        blob = blob_mb * 2**20 // 4
        blobs = {}
        for label, client in paths.items():
            futs = [client.submit(make_blob, i, blob, pure=False) for i in range(4)]
            h.wait_for(lambda futs=futs: all_finished(futs), 120, f"blobs on {label}")
            blobs[label] = futs
        map_metric = f"{n_tasks // 1000}k-task map"
        gather_metric = f"{blob_mb} MB gather"

        def timed_map(label):
            h.settle(max_wait=3)
            t0 = time.perf_counter()
            futs = paths[label].map(inc, range(n_tasks), pure=False)
            paths[label].gather(futs)
            elapsed = time.perf_counter() - t0
            res.add(map_metric, label, elapsed)
            del futs
            time.sleep(0.2)
            return elapsed

        def timed_gather(label):
            h.settle(max_wait=3)
            t0 = time.perf_counter()
            data = paths[label].gather(blobs[label])
            elapsed = time.perf_counter() - t0
            res.add(gather_metric, label, elapsed)
            assert sum(len(d) for d in data) == 4 * blob
            return elapsed

        for label in paths:  # warm-up (not recorded): TCP windows, TLS sessions, caches
            paths[label].gather(blobs[label])
        # Proxied and direct are measured back to back, in alternating order, and their
        # ratio is taken per pair: on a shared machine the load drifts between pairs far
        # more than within one.
        for metric, timed, count in (
            (map_metric, timed_map, map_runs),
            (gather_metric, timed_gather, runs * gathers_per_run),
        ):
            for i in range(count):
                for who in (OURS, REF):
                    order = [f"{who} via proxy", f"{who} direct"]
                    t = {label: timed(label) for label in (order if i % 2 == 0 else order[::-1])}
                    res.add(f"{metric}: direct ÷ proxied", who, t[order[1]] / t[order[0]])
                timed("LocalCluster (tcp, no TLS)")
        blobs.clear()
    finally:
        for kind, obj in reversed(opened):
            try:
                if kind == "cluster" and hasattr(obj, "shutdown"):
                    obj.shutdown()
                else:
                    obj.close()
            except Exception:  # noqa: BLE001 - cleanup continues
                log(f"closing {kind} failed: {traceback.format_exc(limit=1)}")
        gc.collect()


# --- phase: SIGKILL of the gateway ----------------------------------------------------------------


def basic_header(user="alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{h.PASSWORD}".encode()).decode()


def api_works(server, name: str) -> bool:
    import urllib.request

    req = urllib.request.Request(f"{server.address}/api/v1/clusters/{name}")
    req.add_header("Authorization", basic_header())
    with urllib.request.urlopen(req, timeout=2) as resp:
        return json.load(resp)["status"] == "RUNNING"


def phase_sigkill(servers, res: Results, deadline: float = 60.0) -> None:
    for server in servers.values():
        sigkill_once(server, res, deadline)


def sigkill_once(server, res: Results, deadline: float) -> None:
    gw = server.gateway()
    gw2 = server.gateway()
    cluster = gw.new_cluster()
    cluster.scale(1)
    client = cluster.get_client(set_as_default=False)
    client.wait_for_workers(1, timeout=60)
    assert client.submit(inc, 1, pure=False).result() == 2
    gw2.list_clusters()  # a second user session, idle across the kill
    found: dict[str, float | None] = {"existing": None, "api": None, "new client": None}
    errors: dict[str, str] = {}
    extra: list = []
    stop = threading.Event()

    def poll(what, attempt, t_kill):
        while not stop.is_set() and time.perf_counter() - t_kill < deadline:
            try:
                if attempt():
                    found[what] = time.perf_counter() - t_kill
                    return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                errors[what] = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(0.05)

    def existing():
        return client.submit(inc, 2, pure=False).result(timeout=3) == 3

    def new_client():
        c = gw2.connect(cluster.name)
        cl = c.get_client(set_as_default=False)
        extra.append(cl)
        ok = cl.submit(inc, 3, pure=False).result(timeout=3) == 4
        return ok

    h.settle()
    t_kill = time.perf_counter()
    server.kill()
    server.launch()
    threads = [
        threading.Thread(target=poll, args=("existing", existing, t_kill), daemon=True),
        threading.Thread(
            target=poll,
            args=("api", lambda: api_works(server, cluster.name), t_kill),
            daemon=True,
        ),
        threading.Thread(target=poll, args=("new client", new_client, t_kill), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline + 10)
    stop.set()
    for what, value in found.items():
        res.add(f"after SIGKILL: {what} works", server.label, value)
        if value is None:
            res.note(
                f"{server.label}: after SIGKILL + immediate restart, '{what}' did not work "
                f"within {deadline:g} s (last error: {errors.get(what, 'none')})"
            )
    try:
        server.wait_ready(60)
    except Exception as exc:  # noqa: BLE001 - reported, the run continues
        res.note(f"{server.label}: not ready after restart: {exc}")
    for cl in extra + [client]:
        try:
            cl.close(timeout=5)
        except Exception:  # noqa: BLE001
            pass
    try:
        cluster.shutdown()
    except Exception:  # noqa: BLE001
        pass
    gw.close()
    gw2.close()
    gc.collect()


# --- phase: listing and API throughput ------------------------------------------------------------


STUB_SCHEDULER = r"""
# Stands in for a scheduler in the listing benchmark: reports itself RUNNING with the
# heartbeat both gateways understand, then heartbeats every 10 s (both time out after 30 s).
# Our gateway starts it as its launcher (the environment comes as a JSON line on stdin,
# see jupyterhub_dask_gateway/backends/warm.py) and passes .../api/v1 as
# DASK_GATEWAY_API_URL; the reference runs it with the environment set, and .../api.
import json, os, sys, time, urllib.request

if "DASK_GATEWAY_API_TOKEN" in os.environ:
    env = dict(os.environ)  # the reference
else:
    env = json.loads(sys.stdin.readline())["env"]  # ours: the launcher's request
api = env["DASK_GATEWAY_API_URL"]
api = api if api.endswith("/v1") else api + "/v1"
url = f"{api}/clusters/{env['DASK_GATEWAY_CLUSTER_NAME']}/heartbeat"
# A port of its own: our gateway accepts only addresses the scheduler's process holds.
import socket
held = socket.create_server(("127.0.0.1", 0))
port = held.getsockname()[1]
body = json.dumps({"scheduler_address": f"tls://127.0.0.1:{port}", "dashboard_address": "",
    "api_address": f"http://127.0.0.1:{port}", "count": 0, "workers": {}, "active_workers": [],
    "closing_workers": [], "closed_workers": []}).encode()
headers = {"Authorization": "token " + env["DASK_GATEWAY_API_TOKEN"],
    "Content-Type": "application/json"}
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10).close()
    except OSError:
        pass
    time.sleep(10)
"""


def stub_scheduler(directory: Path) -> Path:
    stub = directory / "stub-scheduler"
    stub.write_text(f"#!{sys.executable}" + STUB_SCHEDULER)
    stub.chmod(0o755)
    return stub


async def _raw_list_latency(address: str, reps: int, user: str) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        url = f"{address}/api/v1/clusters/"
        async with session.get(url, headers={"Authorization": basic_header(user)}) as r:
            await r.read()
        for _ in range(reps):
            t0 = time.perf_counter()
            async with session.get(url) as r:
                assert r.status == 200, r.status
                await r.read()
            out.append(time.perf_counter() - t0)
    return out


STATIC_RESPONDER = r"""
import asyncio, sys

body = open(sys.argv[2], "rb").read()
head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
head %= len(body)


async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


class StaticResponder:
    """The limit for listing: a bare asyncio server answering every request with fixed bytes.

    It serves the exact body our gateway returned, so the client call against it costs
    only the client's own work (HTTP, JSON, ``ClusterReport`` objects) and the transfer.
    """

    def __init__(self, directory: Path, body: bytes, label: str = LIMIT):
        self.directory = directory
        self.label = label
        self.port = h.free_port()
        body_file = f"static-body-{self.port}.json"
        (directory / body_file).write_bytes(body)
        (directory / "static_responder.py").write_text(STATIC_RESPONDER)
        self.proc = subprocess.Popen(
            [sys.executable, "static_responder.py", str(self.port), body_file],
            cwd=directory,
        )
        h.wait_for(lambda: h.port_open(self.port), 30, "the static responder")

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gateway(self):
        from dask_gateway import BasicAuth, Gateway

        return Gateway(self.address, auth=BasicAuth("alice", h.PASSWORD))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def fetch_list_body(server) -> bytes:
    import urllib.request

    req = urllib.request.Request(f"{server.address}/api/v1/clusters/")
    req.add_header("Authorization", basic_header())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def phase_list(list_servers, res: Results, runs: int, scratch: Path) -> None:
    gws = {s.label: s.gateway() for s in list_servers.values()}
    try:
        for s in list_servers.values():
            res.add("gateway rss, 0 clusters", s.label, h.rss(s.service_pids()["gateway"]))
        created = 0
        for target in (10, 100):
            for label, gw in gws.items():
                t0 = time.perf_counter()
                for _ in range(target - created):
                    gw.submit()
                res.add(
                    f"create {target - created} clusters (submit)", label, time.perf_counter() - t0
                )
            created = target
            for label, gw in gws.items():
                h.wait_for(
                    lambda gw=gw, n=target: len(gw.list_clusters(status="running")) == n,
                    120,
                    f"{label} to list {target} running clusters",
                    interval=0.2,
                )
            statics = {LIMIT: StaticResponder(scratch, fetch_list_body(list_servers[OURS]))}
            if RSA_KEYS in list_servers:
                statics[LIMIT_RSA] = StaticResponder(
                    scratch, fetch_list_body(list_servers[RSA_KEYS]), LIMIT_RSA
                )
            targets = {**list_servers, **statics}
            clients = {**gws, **{label: st.gateway() for label, st in statics.items()}}
            try:
                h.settle(max_wait=8)
                reps = max(40, 8 * runs)
                labels = list(clients)
                for i in range(reps):
                    k = i % len(labels)
                    for label in labels[k:] + labels[:k]:
                        t0 = time.perf_counter()
                        n = len(clients[label].list_clusters())
                        elapsed = time.perf_counter() - t0
                        res.add(f"list_clusters(), {target} clusters", label, elapsed)
                        assert n == target, (label, n)
                for label, s in targets.items():
                    for v in asyncio.run(_raw_list_latency(s.address, reps, "alice")):
                        res.add(f"GET /api/v1/clusters/ (raw HTTP), {target} clusters", label, v)
                for label, s in list_servers.items():  # context: without the proxy in front
                    for v in asyncio.run(_raw_list_latency(s.api_address, reps, "alice")):
                        res.add(f"GET /api/v1/clusters/ (API port), {target} clusters", label, v)
            finally:
                for label, st in statics.items():
                    clients[label].close()
                    st.stop()
            for s in list_servers.values():
                res.add(
                    f"gateway rss, {target} clusters", s.label, h.rss(s.service_pids()["gateway"])
                )
    finally:
        for gw in gws.values():
            gw.close()


async def _load(address: str, seconds: float, concurrency: int, user: str) -> float:
    """Requests/s of GET /api/v1/clusters/ with one cookie session, ``concurrency`` in flight."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        url = f"{address}/api/v1/clusters/"
        async with session.get(url, headers={"Authorization": basic_header(user)}) as r:
            assert r.status == 200, r.status
            await r.read()
        count = 0
        failures = 0

        async def worker(end):
            nonlocal count, failures
            while time.perf_counter() < end:
                async with session.get(url) as r:
                    await r.read()
                    if r.status == 200:
                        count += 1
                    else:
                        failures += 1

        # Warm-up (not counted): open all connections, let both ends reach steady state.
        end = time.perf_counter() + 0.5
        await asyncio.gather(*(worker(end) for _ in range(concurrency)))
        count = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(worker(end) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"{failures} failed requests against {address}")
        return count / elapsed


def phase_api(
    list_servers, res: Results, runs: int, seconds: float, concurrency: int, context_runs: int
) -> None:
    servers = list(list_servers.values())
    for i in range(runs):
        for s in servers if i % 2 == 0 else servers[::-1]:
            h.settle(max_wait=5)
            rps = asyncio.run(_load(s.address, seconds, concurrency, "carol"))
            res.add("API req/s (public port)", s.label, rps)
            if i < context_runs:  # for context only: the same without the proxy in front
                h.settle(max_wait=5)
                rps = asyncio.run(_load(s.api_address, seconds, concurrency, "carol"))
                res.add("API req/s (API port, no proxy)", s.label, rps)


# --- the report -----------------------------------------------------------------------------------


def fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "MiB":
        return h.mib(value)
    if unit == "KiB":
        return f"{value / 1024:.0f} KiB"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    return f"{value:.3g}"


def build_table(res: Results, args) -> str:
    rows = []

    def row(
        label,
        metric,
        unit,
        target=None,
        limit_metric=None,
        higher_is_better=False,
        ours_key=OURS,
        ref_key=REF,
        limit_key=LIMIT,
    ):
        o, r = res.med(metric, ours_key), res.med(metric, ref_key)
        lim = res.med(limit_metric or metric, limit_key)
        ratio = (o / r) if (o is not None and r) else None
        verdict = ""
        if target is not None and ratio is not None:
            ok = ratio >= target if higher_is_better else ratio <= target
            verdict = (
                "met" if ok else "MISSED"
            ) + f" ({'≥' if higher_is_better else '≤'} {target}×)"
        elif target is not None:
            verdict = "not measured"
        rows.append(
            [
                label,
                fmt(o, unit),
                fmt(r, unit),
                fmt(lim, unit),
                "n/a" if ratio is None else f"{ratio:.2f}×",
                verdict,
            ]
        )

    s = res.samples
    if "new_cluster()" in s:
        row("new_cluster() latency (client call → RUNNING)", "new_cluster()", "s", 0.5)
        row("+1 worker ready (scale(1) → worker joined)", "+1 worker ready", "s")
        if COLD in s["new_cluster()"]:
            row(
                "context: new_cluster() with ours' warm pool off (warm_pool_size=0)",
                "new_cluster()",
                "s",
                ours_key=COLD,
            )
            row(
                "context: +1 worker ready with ours' warm pool off",
                "+1 worker ready",
                "s",
                ours_key=COLD,
            )
    for n in (10, 100):
        m = f"list_clusters(), {n} clusters"
        if m in s:
            row(
                f"list_clusters() with {n} clusters (client call)",
                m,
                "ms",
                0.5 if n == 100 else None,
            )
            if n == 100 and RSA_KEYS in s[m]:
                row(
                    "context: the same with ours issuing the reference's RSA-2048 keys",
                    m,
                    "ms",
                    ours_key=RSA_KEYS,
                    limit_key=LIMIT_RSA,
                )
            row(
                f"GET /api/v1/clusters/ with {n} clusters (raw HTTP, public port)",
                f"GET /api/v1/clusters/ (raw HTTP), {n} clusters",
                "ms",
            )
            row(
                f"context: the same straight to the API port (no proxy), {n} clusters",
                f"GET /api/v1/clusters/ (API port), {n} clusters",
                "ms",
            )
    if "API req/s (public port)" in s:
        row(
            f"API req/s, {args.concurrency} concurrent GET /api/v1/clusters/ (public port)",
            "API req/s (public port)",
            "req/s",
            1.5,
            higher_is_better=True,
        )
        row(
            "API req/s, same, straight to the API port (no proxy)",
            "API req/s (API port, no proxy)",
            "req/s",
            higher_is_better=True,
        )
    map_metric = f"{args.tasks // 1000}k-task map"
    gather_metric = f"{args.blob_mb} MB gather"
    limit_label = "LocalCluster (tcp, no TLS)"
    if map_metric in s:
        for metric, what in (
            (map_metric, f"{args.tasks // 1000}k-task client.map"),
            (gather_metric, f"{args.blob_mb} MB gather"),
        ):
            row(
                f"{what}, through the gateway's proxy",
                metric,
                "s",
                ours_key=f"{OURS} via proxy",
                ref_key=f"{REF} via proxy",
                limit_key=limit_label,
            )
            row(
                f"{what}, direct TLS to the same scheduler",
                metric,
                "s",
                ours_key=f"{OURS} direct",
                ref_key=f"{REF} direct",
                limit_key=limit_label,
            )
        mb = args.blob_mb * 2**20 / 1e6
        for who in (OURS, REF):
            for path in ("via proxy", "direct"):
                t = res.med(gather_metric, f"{who} {path}")
                if t:
                    res.add("gather MB/s", f"{who} {path}", mb / t)
        lt = res.med(gather_metric, limit_label)
        if lt:
            res.add("gather MB/s", limit_label, mb / lt)
        row(
            f"{args.blob_mb} MB gather throughput via proxy",
            "gather MB/s",
            "MB/s",
            ours_key=f"{OURS} via proxy",
            ref_key=f"{REF} via proxy",
            limit_key=limit_label,
            higher_is_better=True,
        )
        for metric, what in (
            (gather_metric, f"{args.blob_mb} MB gather"),
            (map_metric, f"{args.tasks // 1000}k-task map"),
        ):
            ratios = [res.med(f"{metric}: direct ÷ proxied", who) for who in (OURS, REF)]
            cells = ["n/a" if r is None else f"{r:.2f}×" for r in ratios]
            verdict = ""
            if ratios[0] is not None:
                verdict = ("met" if ratios[0] >= 0.95 else "MISSED") + " (≥ 0.95×)"
            rows.append(
                [
                    f"{what}: proxied speed ÷ direct speed (median of back-to-back pairs)",
                    cells[0],
                    cells[1],
                    "",
                    "",
                    verdict,
                ]
            )
    if "rss idle: gateway + proxy" in s:
        row("RSS idle: gateway + proxy processes", "rss idle: gateway + proxy", "MiB")
        row(
            "RSS idle: warm pool (pre-started interpreters, ours only)",
            "rss idle: warm pool",
            "MiB",
        )
    if "rss per cluster (scheduler + 1 worker)" in s:
        row(
            "RSS per cluster: scheduler + 1 worker processes",
            "rss per cluster (scheduler + 1 worker)",
            "MiB",
        )
    if "gateway rss, 100 clusters" in s:
        for who in (OURS, REF):
            a, b = (
                res.med("gateway rss, 0 clusters", who),
                res.med("gateway rss, 100 clusters", who),
            )
            if a and b:
                res.add("gateway rss per cluster", who, (b - a) / 100)
        row(
            "Gateway process RSS growth per cluster (100 clusters)",
            "gateway rss per cluster",
            "KiB",
        )
    for what in ("existing", "api", "new client"):
        metric = f"after SIGKILL: {what} works"
        if metric in s:
            label = {
                "existing": "after SIGKILL + restart: connected client computes again",
                "api": "after SIGKILL + restart: REST API answers",
                "new client": "after SIGKILL + restart: new client connects and computes",
            }[what]
            row(label, metric, "s")
    header = [
        "metric (median)",
        "ours",
        "dask-gateway-server 2026.3",
        "limit",
        "ours ÷ ref",
        "target",
    ]
    return h.markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter load phases")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument("--only", default="", help="comma-separated phases: " + ",".join(PHASES))
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    args.tasks = 2_000 if args.quick else 10_000
    args.blob_mb = 200
    args.concurrency = 16
    api_seconds = 2.0 if args.quick else 3.0
    phases = [p for p in args.only.split(",") if p] or list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")

    gc.disable()  # collect only between steps, on this thread (see tests/conftest.py)
    h.quiet_gateway_finalizers()
    h.ensure_reference()
    scratch = h.scratch_dir("jhdg-bench-")
    h.prepare_accounts(scratch)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    res = Results()
    started: list[h.Server] = []
    log(f"scratch directory {scratch}; phases {phases}; {runs} runs")
    try:
        if set(phases) & {"rss", "start", "transfer", "sigkill"}:
            servers = {
                OURS: h.OurGateway(scratch / "ours", CLUSTER_CONFIG),
                REF: h.ReferenceGateway(scratch / "ref", CLUSTER_CONFIG),
            }
            cold = h.OurGateway(
                scratch / "ours-cold", CLUSTER_CONFIG + "c.LocalBackend.warm_pool_size = 0\n"
            )
            cold.label = COLD
            for s in [*servers.values(), *([cold] if "start" in phases else [])]:
                started.append(s)
                s.start()
            for name, fn in (
                ("rss", lambda: phase_rss(servers, res)),
                ("start", lambda: phase_start(servers, res, runs, cold)),
                (
                    "transfer",
                    lambda: phase_transfer(
                        servers,
                        res,
                        runs=1 if args.quick else runs,
                        n_tasks=args.tasks,
                        blob_mb=args.blob_mb,
                        map_runs=1 if args.quick else min(runs, 3),
                        gathers_per_run=2 if args.quick else 6,
                    ),
                ),
                ("sigkill", lambda: phase_sigkill(servers, res)),
            ):
                if name in phases:
                    log(f"phase {name}")
                    fn()
            for s in [*servers.values(), cold]:
                s.cleanup()
        if set(phases) & {"list", "api"}:
            stub = stub_scheduler(scratch)
            list_servers = {
                OURS: h.OurGateway(
                    scratch / "ours-list",
                    f"c.ClusterConfig.python = {str(stub)!r}\n"
                    "c.DaskGateway.cluster_start_timeout = 900\n",
                ),
                REF: h.ReferenceGateway(
                    scratch / "ref-list",
                    f"c.ClusterConfig.scheduler_cmd = [{str(stub)!r}]\n"
                    "c.DBBackendBase.cluster_start_timeout = 900\n",
                ),
            }
            for s in list_servers.values():
                started.append(s)
                s.start()
            if "api" in phases:
                log("phase api")
                phase_api(
                    list_servers, res, runs, api_seconds, args.concurrency, 1 if args.quick else 2
                )
            if "list" in phases:
                # Context for the listing: ours with the reference's RSA-2048 keys (tls.py).
                rsa = h.OurGateway(
                    scratch / "ours-rsa-list",
                    f"c.ClusterConfig.python = {str(stub)!r}\n"
                    "c.DaskGateway.cluster_start_timeout = 900\n"
                    'c.DaskGateway.tls_key_type = "rsa-2048"\n',
                )
                rsa.label = RSA_KEYS
                started.append(rsa)
                rsa.start()
                list_servers[RSA_KEYS] = rsa
                log("phase list")
                phase_list(list_servers, res, runs, scratch)
            for s in list_servers.values():
                s.cleanup()
    finally:
        for s in started:
            try:
                s.cleanup()
            except Exception:  # noqa: BLE001 - keep cleaning the others
                log(f"cleanup of {s.label} failed: {traceback.format_exc(limit=2)}")
        leftovers = h.processes_in(str(scratch))
        if leftovers:
            log(f"killing {len(leftovers)} leftover processes")
            h.kill_processes(leftovers)
        if not args.keep:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    table = build_table(res, args)
    command = (
        "python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --runs {args.runs}" if args.runs else "")
        + (f" --only {args.only}" if args.only else "")
    )
    body = h.report(command, f"{runs} runs, medians", elapsed, load_start, table, res.notes)
    print(body)
    out_dir = h.BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"run-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "samples": res.samples, "notes": res.notes}, indent=1)
    )
    if not args.no_doc:
        h.write_section("run", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
