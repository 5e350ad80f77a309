#!/usr/bin/env python3
"""An elastic worker pool (``--workers 1:4``) meeting a burst of viewers, against fixed
pools of 1 and 4 workers. Prints a timeline of the elastic run and one comparison table;
asserts nothing.

    .venv/bin/python scripts/bench_elastic.py [--burst 20 --quiet 20 --viewers 12]

Each configuration runs router, worker launcher and gateway as separate processes
(benchlib.system.System) on generated slides whose opens cost ``--open-latency`` seconds
(slow storage: a worker opening a slide waits, it does not compute), with small reader
caches so that viewers switching slides keep opening them, and the gateway's hot-tile
cache off. One viewer trickles ``--trickle`` requests/s throughout; after ``--lead``
seconds ``--viewers`` more viewers (``--inflight`` each) replay seeded pan/zoom traces
for ``--burst`` seconds; then ``--quiet`` seconds with the trickle only, long enough for
the workers beyond MIN to exit (``--idle-exit``).

Timeline columns (every 0.5 s): workers registered at the router, requests waiting in
the router, tiles/s and p99 latency of the replies in that half-second. The comparison
row: tiles/s, p50/p99 over the burst, p99 of the quiet after it, errors, the most
workers, worker-seconds (the pool's size integrated over the run: what it cost), and
how long the elastic pool took to reach its most workers and to shrink back to MIN.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from benchlib.load import Budget, LoadPlan, LoadResult, Outcome, WsViewer, run_viewer
from benchlib.metrics import percentile
from benchlib.report import markdown_lines
from benchlib.slides import ensure_slides, slide_geometry
from benchlib.system import System
from benchlib.trace import TileRequest, TraceSpec, viewer_trace

TICK = 0.5
log = logging.getLogger("bench_elastic")


class TimedResult(LoadResult):
    """LoadResult that also keeps when each reply came (for the per-tick timeline)."""

    def __init__(self) -> None:
        super().__init__()
        self.timed: list[tuple[float, float, bool]] = []  # (done_at, latency ms, ok)

    def record(self, request: TileRequest, outcome: Outcome, started: float) -> None:
        super().record(request, outcome, started)
        self.timed.append((outcome.done_at, (outcome.done_at - started) * 1000.0, outcome.ok))


@dataclass
class Tick:
    t: float
    phase: str
    workers: int
    waiting: int
    tiles_s: float
    p99_ms: float


@dataclass
class Run:
    label: str
    ticks: list[Tick] = field(default_factory=list)
    result: TimedResult = field(default_factory=TimedResult)
    burst: tuple[float, float] = (0.0, 0.0)  # perf_counter window
    quiet: tuple[float, float] = (0.0, 0.0)


async def trickle(base: str, trace: Iterator[TileRequest], rate: float, until: float,
                  result: TimedResult) -> None:
    """One viewer idly looking around: a request, its reply, a pause (not timed)."""
    client = await WsViewer.connect(base)
    try:
        while time.perf_counter() < until:  # bounded by time
            request = next(trace)
            started = time.perf_counter()
            result.record(request, await client.fetch(request, 0), started)
            await asyncio.sleep(1.0 / rate)
    finally:
        await client.close()


def pct(values: list[float], q: float) -> float:
    """The ``q`` (0..1) quantile as benchlib's nearest-rank percentile; 0 with no values."""
    return percentile(sorted(values), q * 100) if values else 0.0


async def run_config(label: str, sysm: System, traces: list[Iterator[TileRequest]],
                     ns: argparse.Namespace) -> Run:
    run = Run(label)
    base = sysm.base
    burst_plan = LoadPlan("ws", ns.inflight, ns.burst, None)
    t0 = time.perf_counter()
    end = t0 + ns.lead + ns.burst + ns.quiet
    idle_viewer = asyncio.create_task(trickle(base, traces[0], ns.trickle, end, run.result))
    burst: list[asyncio.Task[None]] = []
    seen = 0
    next_tick = t0 + TICK
    for _ in range(int((end - t0) / TICK) + 2):  # bounded: one pass per tick
        now = time.perf_counter()
        if not burst and now - t0 >= ns.lead:
            budget = Budget(burst_plan, ns.viewers + 1)
            burst = [asyncio.create_task(run_viewer(v, base, traces[v], budget, burst_plan,
                                                    run.result))
                     for v in range(1, ns.viewers + 1)]
            run.burst = (now, now + ns.burst)
            run.quiet = (now + ns.burst, end)
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        next_tick += TICK
        stats = await asyncio.to_thread(sysm.stats)
        done = run.result.timed[seen:]
        seen = len(run.result.timed)
        t = time.perf_counter() - t0
        phase = ("lead" if not burst else
                 "burst" if time.perf_counter() < run.burst[1] else "quiet")
        run.ticks.append(Tick(t, phase, len(stats["workers"]), stats["routing"]["waiting"],
                              sum(ok for _, _, ok in done) / TICK,
                              pct([lat for _, lat, _ in done], 0.99)))
        if time.perf_counter() >= end:
            break
    await asyncio.gather(idle_viewer, *burst)
    return run


def window(run: Run, span: tuple[float, float], ok_only: bool = True) -> list[float]:
    return [lat for at, lat, ok in run.result.timed if span[0] <= at < span[1] and ok]


def summary_row(run: Run, ns: argparse.Namespace, low: int | None) -> list[str]:
    """One pool's row; ``low`` is the elastic pool's MIN (None: a fixed pool)."""
    burst = window(run, run.burst)
    # replies until the last burst request is answered count as burst
    tail = window(run, (run.quiet[0] + 5.0, run.quiet[1]))
    most = max(t.workers for t in run.ticks)
    worker_s = sum(t.workers for t in run.ticks) * TICK
    start = next((t.t for t in run.ticks if t.phase == "burst"), 0.0)
    to_max = next((t.t - start for t in run.ticks if t.phase != "lead" and t.workers == most),
                  None) if low is not None else None
    quiet_at = next((t.t for t in run.ticks if t.phase == "quiet"), None)
    back = next((t.t - quiet_at for t in run.ticks if quiet_at is not None
                 and t.t >= quiet_at and t.workers == low), None)
    errors = sum(run.result.errors.values())
    return [run.label, f"{len(burst) / ns.burst:.0f}", f"{pct(burst, 0.5):.0f}",
            f"{pct(burst, 0.99):.0f}", f"{pct(tail, 0.99):.0f}", str(errors), str(most),
            f"{worker_s:.0f}", "-" if to_max is None else f"{to_max:.1f}",
            "-" if back is None else f"{back:.1f}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--elastic", default="1:4", help="the elastic pool's MIN:MAX")
    p.add_argument("--lead", type=float, default=4.0, help="seconds of trickle first")
    p.add_argument("--burst", type=float, default=20.0)
    p.add_argument("--quiet", type=float, default=20.0)
    p.add_argument("--viewers", type=int, default=12, help="viewers in the burst")
    p.add_argument("--inflight", type=int, default=4, help="requests in flight per viewer")
    p.add_argument("--trickle", type=float, default=4.0, help="requests/s of the idle viewer")
    p.add_argument("--open-latency", type=float, default=0.3)
    p.add_argument("--reader-cache-size", type=int, default=4)
    p.add_argument("--idle-exit", type=float, default=5.0, help="worker_idle_exit (s)")
    p.add_argument("--scale-up-wait", type=float, default=0.2)
    p.add_argument("--num-slides", type=int, default=16)
    p.add_argument("--slides-dir", default="/tmp/tilerouter-bench-slides")
    ns = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    low, high = (int(x) for x in ns.elastic.split(":"))
    slides = ensure_slides(ns.slides_dir, ns.num_slides, 4000, 3000, seed=7, procs=2)
    configs = [(f"--workers {ns.elastic}", low, high), (f"--workers {low}", low, 0),
               (f"--workers {high}", high, 0)]
    runs = []
    for label, workers, most in configs:
        sysm = System(slides.root, workers=workers, workers_max=most,
                      open_latency=ns.open_latency, reader_cache_size=ns.reader_cache_size,
                      worker_idle_exit=ns.idle_exit, scale_up_wait=ns.scale_up_wait,
                      gateway_cache_bytes=0, heartbeat_interval=1.0, heartbeat_liveness=3,
                      request_timeout=60.0, log_level="WARNING")
        spec = TraceSpec(seed=11, switch_every=4)
        geometries = {n: slide_geometry(os.path.join(slides.root, n), sysm.settings)
                      for n in slides.names}
        traces = [viewer_trace(v, spec, slides.names, geometries)
                  for v in range(ns.viewers + 1)]
        try:
            sysm.start()
            runs.append(asyncio.run(run_config(label, sysm, traces, ns)))
        finally:
            sysm.stop()
    print(f"\n{os.cpu_count()} CPUs (shared with the load generator and anything else "
          f"running), {ns.num_slides} slides 4000x3000, open latency {ns.open_latency} s, "
          f"reader cache {ns.reader_cache_size} slides/worker, gateway cache off; one viewer "
          f"at {ns.trickle:g} requests/s throughout, burst {ns.viewers} viewers x "
          f"{ns.inflight} for {ns.burst:.0f} s "
          f"after {ns.lead:.0f} s; scale_up_wait {ns.scale_up_wait} s, worker_idle_exit "
          f"{ns.idle_exit} s, heartbeat 1 s\n")
    print(f"Timeline, --workers {ns.elastic}:\n")
    elastic = runs[0]
    print("\n".join(markdown_lines(
        ["t s", "phase", "workers", "waiting", "tiles/s", "p99 ms"],
        [[f"{t.t:.1f}", t.phase, str(t.workers), str(t.waiting), f"{t.tiles_s:.0f}",
          f"{t.p99_ms:.0f}"] for t in elastic.ticks])))
    print()
    print("\n".join(markdown_lines(
        ["pool", "burst tiles/s", "burst p50 ms", "burst p99 ms", "quiet p99 ms", "errors",
         "most workers", "worker-s", "to most s", "back to MIN s"],
        [summary_row(r, ns, low if i == 0 else None) for i, r in enumerate(runs)])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
