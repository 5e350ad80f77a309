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

from benchlib.dicom_slides import level_file, make_dicom_slide, series_uids
from benchlib.load import LoadPlan, run_load
from benchlib.orthanc import OrthancServer
from benchlib.system import System
from benchlib.trace import TileRequest

log = logging.getLogger("bench_dicomweb")
USER, PASSWORD = "bench", "bench-pacs"  # the local Orthanc's basic auth


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


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
    lat = result.latencies_ms
    return {"source": source, "geometry": f"{tile_size}/{overlap}", "tiles": result.ok,
            "errors": dict(result.errors), "tiles_s": result.ok / result.elapsed,
            "p50": statistics.median(lat) if lat else float("nan"), "p99": _pct(lat, 0.99),
            "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--height", type=int, default=6144)
    ap.add_argument("--slides", type=int, default=2)
    ap.add_argument("--levels", type=int, default=3, help="top DeepZoom levels asked")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--inflight", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("pydicom", "wsidicom", "wsidicomizer", "opentile", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)

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


if __name__ == "__main__":
    main()
