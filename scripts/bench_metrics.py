#!/usr/bin/env python3
"""What recording one request costs the gateway: our plain-int metrics against
prometheus_client's Counter + Histogram (in-process, and in its multiprocess mode), plus
the per-process snapshot flush and a scrape. Prints a table; asserts nothing.

    .venv/bin/python scripts/bench_metrics.py [--n 200000]

The hot-tile path of a gateway costs tens of microseconds per tile (CPU), so anything
over ~1 us per request shows in tiles/s; this is why wsgateway/metrics.py counts in
plain ints and formats with prometheus_client only at scrape time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from config.histogram import BUCKETS
from config.settings import Settings
from wsgateway.gateway import Gateway
from wsgateway.metrics import GatewayMetrics, MetricsExporter
from wsgateway.relay import RouterClient

REQUEST = {"op": "tile", "slide": "s.svs", "level": 12, "col": 3, "row": 4, "format": "jpeg"}


def per_call_us(fn: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def prometheus_client_us(n: int) -> float:
    """A labelled Counter.inc + Histogram.observe, as an instrumented gateway would."""
    import prometheus_client as pc

    registry = pc.CollectorRegistry()
    count = pc.Counter("r", "r", ["op", "format", "outcome"], registry=registry)
    seconds = pc.Histogram("s", "s", ["op"], buckets=BUCKETS, registry=registry)

    def record() -> None:
        started = time.monotonic()
        count.labels("tile", "jpeg", "ok").inc()
        seconds.labels("tile").observe(time.monotonic() - started)
    return per_call_us(record, n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="calls per measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.child == "pc":  # run in a process whose env selects multiprocess mode
        print(f"{prometheus_client_us(ns.n):.3f}")
        return 0
    metrics = GatewayMetrics()
    ours = per_call_us(lambda: metrics.done(REQUEST, "ok", time.monotonic()), ns.n)
    in_process = prometheus_client_us(ns.n)
    with tempfile.TemporaryDirectory() as mp:
        out = subprocess.run([sys.executable, __file__, "--child", "pc", "--n", str(ns.n)],
                             env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": mp},
                             capture_output=True, text=True, check=True).stdout
        multiprocess = float(out)
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(metrics_dir=directory, frontend="ipc:///nonexistent/f.ipc",
                            backend="ipc:///nonexistent/b.ipc")
        gateway = Gateway(settings, RouterClient(settings))  # never started
        for i in range(50):  # a realistic spread of label sets
            gateway.metrics.done({"op": "tile", "format": "png" if i % 2 else "jpeg"},
                                 ("ok", "not_found", "timeout")[i % 3], time.monotonic())
        exporter = MetricsExporter(gateway, directory)
        flush = per_call_us(exporter.flush, 2000)
        scrape = per_call_us(exporter.render, 500)
    print("| what | CPU us per call |\n|---|--:|")
    print(f"| one request, plain ints (GatewayMetrics.done) | {ours:.2f} |")
    print(f"| one request, prometheus_client Counter + Histogram | {in_process:.2f} |")
    print(f"| the same in prometheus_client multiprocess mode | {multiprocess:.2f} |")
    print(f"| snapshot flush (every {0.5:g} s per gateway process) | {flush:.1f} |")
    print(f"| scrape (flush + read + format) | {scrape:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
