#!/usr/bin/env python3
"""Slides from a PACS vs the same DICOM files on disk, through the whole system.

Generated demo slides are converted to DICOM WSI (baseline JPEG frames of 256 px) and
stored in a real Orthanc (DICOMweb plugin) on this machine. The real system (router,
workers, gateway) then serves them twice: from the PACS (``--store pacs=dicomweb+...``:
wsidicom over WADO-RS, frames cached per worker) and from a local folder of the same
.dcm files (OpenSlide 4 reads DICOM WSI). Two geometries: DeepZoom 254/1 (every tile
rendered) and 256/0, the frames' own size, where the PACS path passes interior frames
through as they are (the local path renders: OpenSlide's DICOM slides are not
passthrough vendors). Each row asks every tile of the top ``--levels`` DeepZoom levels
once, in a shuffled order, over ``--viewers`` websockets x ``--inflight`` in flight;
caches start cold (new processes per row, each slide opened once before timing).

    .venv/bin/python scripts/bench_dicomweb.py [--width 8192 --height 6144 --slides 2]

``--trace``: cache-aware vs round-robin routing with many slides in the PACS, on
bench_remote.py's viewer trace through a latency proxy (``benchlib/dicomweb_trace.py``;
defaults 24 slides of 4096 x 3072, RTT 0 and 20 ms, 2 workers, reader cache 8, about
5 min on 2 cores the first time, the DICOM slides are kept for the next run):

    .venv/bin/python scripts/bench_dicomweb.py --trace [--rtts 20 --slides 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import dicomweb_trace
from benchlib.args import csv_list
from benchlib.dicom_slides import level_file, make_dicom_slide, series_uids
from benchlib.load import LoadPlan, run_load
from benchlib.metrics import percentile
from benchlib.orthanc import OrthancServer
from benchlib.system import System
from benchlib.trace import TileRequest

log = logging.getLogger("bench_dicomweb")
USER, PASSWORD = "bench", "bench-pacs"  # the local Orthanc's basic auth


def _tiles(system: System, slides: list[str], levels: int) -> list[TileRequest]:
    ws = system.ws()
    try:
        out = []
        for slide in slides:
            info = ws.request({"id": 1, "op": "info", "slide": slide})[0]
            assert info["ok"], info
            ws.tile(slide, info["dz_levels"] - levels, 0, 0)  # open it before timing
            for level in range(info["dz_levels"] - levels, info["dz_levels"]):
                cols, rows = info["dz_tiles"][level]
                out += [TileRequest(slide, level, c, r) for c in range(cols) for r in range(rows)]
        return out
    finally:
        ws.close()


def _row(source: str, geometry: tuple[int, int], stores: str, folder: Path,
         slides: list[str], args: argparse.Namespace) -> dict[str, object]:
    tile_size, overlap = geometry
    system = System(folder, workers=args.workers, stores=stores, tile_size=tile_size,
                    overlap=overlap, dicomweb_user=USER, dicomweb_password=PASSWORD,
                    log_level="WARNING", gateway_cache_bytes=0).start()
    try:
        system.wait_ready()
        tiles = _tiles(system, slides, args.levels)
        random.Random(7).shuffle(tiles)
        traces = [iter(tiles[v::args.viewers]) for v in range(args.viewers)]
        budgets = [len(tiles[v::args.viewers]) for v in range(args.viewers)]
        plan = LoadPlan("ws", args.inflight, None, budgets)
        result = asyncio.run(run_load(system.base, traces, plan))
        frames = sum(w.get("remote", {}).get("pacs", {}).get("frames_fetched", 0)
                     for w in system.stats()["workers"])
    finally:
        system.stop()
    lat = sorted(result.latencies_ms)
    return {"source": source, "geometry": f"{tile_size}/{overlap}", "tiles": result.ok,
            "errors": dict(result.errors), "tiles_s": result.ok / result.elapsed,
            "p50": statistics.median(lat) if lat else float("nan"), "p99": percentile(lat, 99),
            "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", action="store_true",
                    help="cache-aware vs round-robin on the many-slide viewer trace")
    ap.add_argument("--width", type=int, default=None, help="8192; --trace 4096")
    ap.add_argument("--height", type=int, default=None, help="6144; --trace 3072")
    ap.add_argument("--slides", type=int, default=None, help="2; --trace 24")
    ap.add_argument("--levels", type=int, default=3, help="top DeepZoom levels asked")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--viewers", type=int, default=None, help="8; --trace 2 per slide")
    ap.add_argument("--inflight", type=int, default=4)
    trace = ap.add_argument_group("--trace")
    trace.add_argument("--rtts", default="0,20", help="proxy round trips in ms")
    trace.add_argument("--policies", default="cache-aware,round-robin")
    trace.add_argument("--reader-cache-size", type=int, default=8, help="slides/worker")
    trace.add_argument("--frame-cache-mb", type=float, default=16.0,
                       help="DICOM frames kept per worker (below the slide set's size)")
    trace.add_argument("--tile-cache-bytes", type=lambda v: int(float(v)), default=8_000_000)
    trace.add_argument("--duration", type=float, default=12.0, help="seconds per row")
    trace.add_argument("--seed", type=int, default=1)
    trace.add_argument("--slides-dir", default="/tmp/tilerouter-bench-dicomweb-slides")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for name in ("pydicom", "wsidicom", "wsidicomizer", "opentile", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.trace:
        main_trace(args)
        return
    args.width, args.height = args.width or 8192, args.height or 6144
    args.slides, args.viewers = args.slides or 2, args.viewers or 8

    root = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    try:
        series = []
        for i in range(args.slides):
            started = time.monotonic()
            files = make_dicom_slide(root / f"s{i}", width=args.width, height=args.height,
                                     seed=i, accession=f"ACC-{i:04d}")
            series.append((f"s{i}", files))
            log.info("slide %d: %d instances in %.1f s", i, len(files),
                     time.monotonic() - started)
        with OrthancServer(user=USER, password=PASSWORD) as pacs:
            for _, files in series:
                pacs.upload(files)
            stores = f"pacs={pacs.dicomweb_url},local={root}"
            sources = {
                "PACS (Orthanc, DICOMweb)": [f"pacs/{'/'.join(series_uids(f))}"
                                             for _, f in series],
                "local .dcm (OpenSlide)": [f"local/{name}/{level_file(f).name}"
                                           for name, f in series],
            }
            rows = [_row(source, geometry, stores, root, slides, args)
                    for geometry in ((254, 1), (256, 0)) for source, slides in sources.items()]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.slides} slides of {args.width} x {args.height}, top {args.levels} "
          f"DeepZoom levels, each tile once, {args.viewers} websockets x {args.inflight}, "
          f"{args.workers} workers\n")
    print("| source | geometry | tiles | tiles/s | p50 ms | p99 ms | frames fetched | errors |")
    print("|---|---|--:|--:|--:|--:|--:|---|")
    for r in rows:
        print(f"| {r['source']} | {r['geometry']} | {r['tiles']} | {r['tiles_s']:.0f} | "
              f"{r['p50']:.1f} | {r['p99']:.1f} | {r['frames']} | {r['errors'] or ''} |")


def main_trace(args: argparse.Namespace) -> None:
    args.width, args.height = args.width or 4096, args.height or 3072
    args.slides = args.slides or 24
    args.viewers = args.viewers or 2 * args.slides
    args.rtts = tuple(float(x) for x in csv_list(args.rtts))
    args.policies = tuple(csv_list(args.policies))
    log_dir = tempfile.mkdtemp(prefix="bench-dicomweb-trace-")
    report, clean = dicomweb_trace.run(args, log_dir)
    print(report, flush=True)
    if not clean:
        print(f"\nlogs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
