#!/usr/bin/env python3
"""Router scaling on a small machine: each router's CPU per request and share of requests
with 1, 2 and 4 routers.

With 2 cores, N routers cannot show N times the throughput here: the gateway, workers and
this load generator share those cores. What makes throughput add up when each router has
a host of its own is that (a) a router's CPU per request stays flat as routers are added
and (b) the shards are even, so each router takes about 1/N of the requests. This
measures both on ``tilerouter serve --routers N``:

- a trace of many slide ids (``--slides``, default 1000: hard links to one small
  generated slide), seeded pan/zoom sessions (benchlib.trace) with every slide id equally
  popular (Zipf s = 0) and short sessions (``--switch-every`` 2 steps, so a window holds
  hundreds of sessions and the shares follow the sharding, not a few long sessions);
- the same load per router in every run, as when each router has a host of its own:
  requests start at ``--rate-per-router`` x N per second (a router's CPU per request
  falls as its own rate rises, since one poll wake-up then handles more messages, so
  runs are compared at equal per-router rates; ``--rate-per-router 0`` = as fast as the
  machine goes);
- tiny render cost: the workers run with ``bench_tiles_by_position`` (a benchmark knob: a
  tile is rendered once per position and every other slide id's tile there is a tile-cache
  hit), the gateway's hot-tile cache is off (``gateway_cache_bytes=0``) and there is no
  prefetch, so every tile is a real request and reply through a router;
- after a warm-up, a fixed window: per router the requests it received (asked on its
  frontend, ``mmi.stats``), its share, its CPU seconds (utime + stime, /proc/PID/stat)
  and CPU µs per request; per run tiles/s, max share / even share (1/N) against
  ``--max-skew`` and mean µs per request against 1 router's.

    .venv/bin/python scripts/bench_routers_scale.py [--routers 1,2,4 --duration 20
                                                     --rate-per-router 200]

Prints markdown tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from dataclasses import dataclass

from benchlib import cpu
from benchlib.args import csv_list, positive_int
from benchlib.load import LoadPlan, LoadResult, run_load
from benchlib.routers import RouterProc, mmi_stats, router_processes
from benchlib.server import ServerOptions, ServerProcess
from benchlib.slides import ensure_slides, slide_geometry
from benchlib.trace import TraceSpec, viewer_trace

from config.settings import Settings

log = logging.getLogger("bench_routers_scale")


@dataclass(frozen=True)
class RouterRow:
    requests: int
    cpu_s: float
    idle_cpu_per_s: float  # CPU seconds per second before the load (heartbeats etc.)

    @property
    def us_per_request(self) -> float:
        return 1e6 * self.cpu_s / self.requests if self.requests else float("nan")


@dataclass(frozen=True)
class Run:
    routers: int
    rows: list[RouterRow]
    result: LoadResult
    window_s: float
    usage: cpu.CpuUsage | None

    @property
    def total(self) -> int:
        return sum(r.requests for r in self.rows)

    def shares(self) -> list[float]:
        return [r.requests / self.total if self.total else 0.0 for r in self.rows]

    @property
    def skew(self) -> float:
        """Largest share over the even one (1/N): 1.0 is a perfect split."""
        return max(self.shares()) * self.routers

    @property
    def us_per_request(self) -> float:
        """All routers' CPU over all their requests."""
        return 1e6 * sum(r.cpu_s for r in self.rows) / self.total if self.total else float("nan")


def slide_ids(cache: str, count: int, size: tuple[int, int]) -> tuple[str, list[str]]:
    """``count`` slide ids in a fresh directory, hard links to one generated slide."""
    base = ensure_slides(cache, 1, *size, seed=11)
    source = os.path.join(base.root, base.names[0])
    root = tempfile.mkdtemp(prefix="bench-routers-", dir=cache)
    names = [f"s{i:04d}.tiff" for i in range(count)]
    for name in names:
        os.link(source, os.path.join(root, name))
    return root, names


def counts(routers: list[RouterProc]) -> list[tuple[int, float]]:
    """(requests received, CPU seconds) of each router, now."""
    return [(int(mmi_stats(r.frontend)["routing"]["requests"]), r.cpu_seconds())
            for r in routers]


def run(n: int, args: argparse.Namespace, root: str, names: list[str]) -> Run:
    options = ServerOptions(
        slides=root, workers=args.workers, gateway_cache_bytes=0,
        extra=(("routers", str(n)), ("bench_tiles_by_position", "true"),
               ("prefetch", "false")))
    log_path = os.path.join(tempfile.gettempdir(), f"bench-routers-{n}.log")
    geometry = slide_geometry(os.path.join(root, names[0]), Settings())
    geometries = dict.fromkeys(names, geometry)
    spec = TraceSpec(seed=args.seed, zipf_s=0.0, switch_every=args.switch_every)
    traces = [viewer_trace(v, spec, names, geometries) for v in range(args.viewers)]
    with ServerProcess(options, log_path) as srv:
        routers = router_processes(srv.pgid)
        if len(routers) != n:
            raise RuntimeError(f"expected {n} routers, found {routers}")
        idle_before, idle_at = counts(routers), time.monotonic()
        time.sleep(args.idle)  # no load: each router's own heartbeat cost
        idle_after, idle_s = counts(routers), time.monotonic() - idle_at
        asyncio.run(run_load(srv.base_url, traces, LoadPlan("ws", args.inflight,
                                                            args.warmup, None)))
        before, cpu_before, started = counts(routers), cpu.sample(srv.pgid), time.monotonic()
        rate = args.rate_per_router * n or None
        result = asyncio.run(run_load(srv.base_url, traces, LoadPlan(
            "ws", args.inflight, args.duration, None, rate=rate)))
        after, cpu_after = counts(routers), cpu.sample(srv.pgid)
        window = time.monotonic() - started
    rows = [RouterRow(a[0] - b[0], a[1] - b[1], (ia[1] - ib[1]) / idle_s)
            for a, b, ia, ib in zip(after, before, idle_after, idle_before, strict=True)]
    return Run(n, rows, result, window, cpu.usage(cpu_before, cpu_after))


def report(runs: list[Run], args: argparse.Namespace) -> None:
    pace = (f"{args.rate_per_router:.0f} requests/s per router" if args.rate_per_router
            else "unpaced")
    print(f"\n{args.slides} slide ids (hard links to one {args.slide_size} slide), sessions "
          f"of {args.switch_every} steps, {args.viewers} ws viewers x {args.inflight} in "
          f"flight, {pace}, {args.workers} workers, 1 gateway, warm-up {args.warmup:.0f} s, "
          f"window {args.duration:.0f} s, {os.cpu_count()} cores (machine shared)\n")
    print("| routers | router | requests | req/s | share | CPU s | CPU µs/request "
          "| idle CPU ms/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        for i, (row, share) in enumerate(zip(r.rows, r.shares(), strict=True)):
            print(f"| {r.routers} | {i} | {row.requests:,} | {row.requests / r.window_s:.0f} | "
                  f"{share:.3f} | {row.cpu_s:.2f} | {row.us_per_request:.0f} | "
                  f"{1000 * row.idle_cpu_per_s:.1f} |")
    base = runs[0].us_per_request
    print(f"\n| routers | tiles/s | errors | router µs/request | vs {runs[0].routers} router(s) "
          f"| flat (<= {args.max_cpu_ratio}x) | max share / even | shards within "
          f"{args.max_skew}x | cores gw/router/workers/bench/other |")
    print("|---:|---:|---:|---:|---:|---|---:|---|---|")
    for r in runs:
        rate = r.result.ok / r.window_s
        errors = sum(r.result.errors.values())
        u = r.usage
        cores = ("n/a" if u is None else "/".join(
            f"{x:.2f}" for x in (u.server.get("gateway", 0.0), u.server.get("router", 0.0),
                                 u.server.get("workers", 0.0), u.bench, u.other)))
        even = "yes" if r.skew <= args.max_skew else "NO"
        ratio = r.us_per_request / base
        flat = "yes" if ratio <= args.max_cpu_ratio else "NO"
        print(f"| {r.routers} | {rate:,.0f} | {errors} | {r.us_per_request:.0f} | "
              f"{ratio:.2f}x | {flat} | {r.skew:.3f} | {even} | {cores} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routers", default="1,2,4", help="router counts, comma-separated")
    ap.add_argument("--slides", type=positive_int, default=1000, help="slide ids in the trace")
    ap.add_argument("--switch-every", type=positive_int, default=2,
                    help="walk steps per viewing session before the next slide")
    ap.add_argument("--rate-per-router", type=float, default=200.0,
                    help="requests/s started per router (0 = unpaced)")
    ap.add_argument("--slide-size", default="4000x3000")
    ap.add_argument("--workers", type=positive_int, default=2)
    ap.add_argument("--viewers", type=positive_int, default=8)
    ap.add_argument("--inflight", type=positive_int, default=4, help="per viewer")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds before the window")
    ap.add_argument("--duration", type=float, default=20.0, help="measured window (s)")
    ap.add_argument("--idle", type=float, default=3.0, help="idle seconds measured first")
    ap.add_argument("--max-skew", type=float, default=1.25)
    ap.add_argument("--max-cpu-ratio", type=float, default=1.25,
                    help="CPU per request vs the first run's still counted flat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", default="/tmp/tilerouter-bench-slides")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    counts_wanted = [int(x) for x in csv_list(args.routers)]
    width, _, height = args.slide_size.partition("x")
    os.makedirs(args.cache, exist_ok=True)
    root, names = slide_ids(args.cache, args.slides, (int(width), int(height)))
    try:
        runs = []
        for n in counts_wanted:
            log.info("%d router(s)...", n)
            runs.append(run(n, args, root, names))
    finally:
        for name in names:
            os.unlink(os.path.join(root, name))
        os.rmdir(root)
    report(runs, args)


if __name__ == "__main__":
    main()
