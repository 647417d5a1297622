"""Fuzz a real gateway's public port at volume: random requests, random bytes, bad TLS hellos.

Usage: ``python bench/fuzz.py [--requests N] [--seed S]`` (as root, like every benchmark:
clusters run as their owners' accounts).

One gateway (Basic auth, local backend, one real cluster) is started from its CLI. Then
N random HTTP requests (methods, every endpoint, garbled credentials and bodies, deep
JSON, browser fetch modes), N/10 connections sending random bytes, and N/10 malformed TLS
ClientHellos (truncated, lying lengths, random SNI) go to its public port (the TCP
proxy, which relays non-cluster traffic to the API). It prints the counts by status,
the number of 5xx answers (must be 0), that the gateway still serves a normal request,
and the resident memory of the gateway and its proxy before and after. Exits 1 on any
5xx or if the gateway stopped serving.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import random
import struct
import sys
import time

import harness as h

PATHS = [
    "/api/version",
    "/api/health",
    "/api/v1/clusters/",
    "/api/v1/clusters/{name}",
    "/api/v1/clusters/{name}/scale",
    "/api/v1/clusters/{name}/adapt",
    "/api/v1/clusters/{name}/heartbeat",
    "/api/v1/cluster-details/{name}",
    "/api/v1/routes?since={junk}",
    "/api/v1/options",
    "/api/v1/whoami",
    "/clusters/{name}/status",
    "/{junk}",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"]


def junk(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choice("abc019-_.%/\\?#&=é") for _ in range(rng.randint(0, n)))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randint(0, 7 if depth < 4 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**7, 1.5, float("1e308")])
    if kind in (3, 4):
        return junk(rng)
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["count", "minimum", "maximum", "workers", "cluster_options", "shared_groups", junk(rng)]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_request(rng: random.Random, name: str) -> tuple[str, str, dict, bytes]:
    path = rng.choice(PATHS).format(name=rng.choice([name, junk(rng), "0" * 32]), junk=junk(rng))
    headers = {}
    auth = rng.randint(0, 4)
    if auth == 1:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"alice:{h.PASSWORD}".encode()).decode()
        )
    elif auth == 2:
        headers["Authorization"] = "Basic " + junk(rng, 30)
    elif auth == 3:
        headers["Authorization"] = rng.choice(["token ", "Bearer ", "jupyterhub "]) + junk(rng, 40)
    if rng.random() < 0.2:
        headers["Sec-Fetch-Mode"] = rng.choice(["cors", "navigate", "no-cors"])
    choice = rng.randint(0, 3)
    if choice == 0:
        body = b""
    elif choice == 1:
        body = json.dumps(random_json(rng)).encode()
    elif choice == 2:
        body = b"[" * 5000 + b"]" * 5000
    else:
        body = rng.randbytes(rng.randint(1, 300))
    return rng.choice(METHODS), path, headers, body


async def http_request(port: int, method: str, path: str, headers: dict, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        parts = status_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1  # -1: closed
    finally:
        writer.close()


def bad_hello(rng: random.Random) -> bytes:
    sni = rng.choice([b"daskgateway-" + rng.randbytes(8).hex().encode(), rng.randbytes(20), b""])
    ext = struct.pack("!HH", 0, len(sni) + 5) + struct.pack("!HBH", len(sni) + 3, 0, len(sni)) + sni
    body = b"\x03\x03" + rng.randbytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(ext)) + ext
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    record = b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
    cut = rng.choice([len(record), rng.randint(1, len(record)), 5])
    if rng.random() < 0.3:  # lie about the length
        record = record[:3] + struct.pack("!H", rng.randint(0, 65535)) + record[5:]
    return record[:cut]


async def raw_send(port: int, data: bytes) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 15)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def fuzz(port: int, n: int, seed: int, name: str) -> collections.Counter:
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    sem = asyncio.Semaphore(32)

    async def one(req):
        async with sem:
            try:
                counts[await http_request(port, *req)] += 1
            except (TimeoutError, OSError, ValueError) as e:
                counts[type(e).__name__] += 1

    async def raw(data):
        async with sem:
            await raw_send(port, data)
            counts["raw bytes sent"] += 1

    tasks = [one(random_request(rng, name)) for _ in range(n)]
    tasks += [raw(rng.randbytes(rng.randint(1, 2000))) for _ in range(n // 10)]
    tasks += [raw(bad_hello(rng)) for _ in range(n // 10)]
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scratch = h.scratch_dir("jhdg-fuzz-")
    h.prepare_accounts(scratch)
    gw = h.OurGateway(scratch / "ours", "c.DaskGateway.max_clusters_per_user = 3\n")
    try:
        gw.start()
        from dask_gateway import BasicAuth, Gateway

        with Gateway(gw.address, auth=BasicAuth("alice", h.PASSWORD)) as g:
            name = g.submit()
            g.connect(name).close()
        pids = [p for group in gw.service_pids().values() for p in group]
        before = h.rss(pids)
        t0 = time.perf_counter()
        counts = asyncio.run(fuzz(gw.public_port, args.requests, args.seed, name))
        elapsed = time.perf_counter() - t0
        after = h.rss(pids)
        import urllib.request

        with urllib.request.urlopen(f"{gw.address}/api/health", timeout=30) as r:
            serving = r.status == 200
    finally:
        gw.cleanup()
    fives = sum(v for k, v in counts.items() if isinstance(k, int) and k >= 500)
    print(
        f"{args.requests} requests + {args.requests // 10} random-byte connections + "
        f"{args.requests // 10} malformed TLS hellos in {elapsed:.1f} s (seed {args.seed})"
    )
    for key, value in sorted(counts.items(), key=lambda kv: str(kv[0])):
        print(f"  {key}: {value}")
    print(f"5xx answers: {fives}")
    print(f"gateway still serving: {serving}")
    print(f"RSS of gateway + proxy + warm pool: {h.mib(before)} before, {h.mib(after)} after")
    return 0 if fives == 0 and serving else 1


if __name__ == "__main__":
    sys.exit(main())
