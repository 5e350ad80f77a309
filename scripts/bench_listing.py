#!/usr/bin/env python3
"""Listing a huge remote store: time to the first page, later pages, and whether the
gateway stays responsive meanwhile.

An nginx store whose ``index.json`` names N slides (default 100,000; the files need not
exist to be listed) is served by the real system. Measured: ``GET /slides`` cold (the
worker fetches and parses the manifest) and warm (the cached listing, paged), every page
of the whole listing, and ``GET /healthz`` latency sampled from another thread while the
cold listing runs (the gateway relays; it must not stall).

    .venv/bin/python scripts/bench_listing.py [--slides 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchlib.remote_servers import NginxServer
from benchlib.system import System


def _get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    return time.perf_counter() - t0, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slides", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp:
        root = Path(tmp)
        entries = [{"path": f"study-{i // 1000:04d}/case-{i:07d}/slide.svs", "size": 1 << 30}
                   for i in range(args.slides)]
        (root / "index.json").write_text(json.dumps({"slides": entries}))
        with NginxServer(root) as nginx:
            system = System(nginx.url + "/", workers=1).start()
            try:
                system.wait_ready()
                base = system.base
                health: list[float] = []
                stop = threading.Event()

                def sample() -> None:
                    for _ in range(10_000):
                        if stop.is_set():
                            return
                        health.append(_get(base + "/healthz")[0])
                        time.sleep(0.005)

                sampler = threading.Thread(target=sample)
                sampler.start()
                cold, body = _get(base + "/slides?limit=1000")
                stop.set()
                sampler.join()
                first = json.loads(body)
                warm, _ = _get(base + "/slides?limit=1000")
                t0, pages, offset = time.perf_counter(), 0, 0
                while offset is not None and pages < 10_000:
                    _, body = _get(f"{base}/slides?offset={offset}&limit=10000")
                    offset = json.loads(body).get("next")
                    pages += 1
                whole = time.perf_counter() - t0
            finally:
                system.stop()
    print(f"store: nginx, index.json of {args.slides} slides "
          f"({len(json.dumps({'slides': entries})) / 1e6:.1f} MB); total listed "
          f"{first['total']}")
    print(f"first page (1000), cold: {cold * 1000:.0f} ms; warm: {warm * 1000:.1f} ms")
    print(f"whole listing in pages of 10000: {pages} pages, {whole * 1000:.0f} ms")
    if health:
        print(f"/healthz during the cold listing: {len(health)} samples, "
              f"p50 {statistics.median(health) * 1000:.1f} ms, "
              f"max {max(health) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
