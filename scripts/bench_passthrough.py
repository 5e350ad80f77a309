#!/usr/bin/env python3
"""Stored-tile passthrough vs rendering: tiles/s and µs per tile on a generated slide.

Both readers are OpenSlideReader(tile_size=256, overlap=0) on the same file; one serves
stored JPEG tiles as-is, the other (passthrough=False) renders them through
DeepZoomGenerator + Pillow JPEG encoding, as tiles are served without passthrough. The
tiles are interior tiles of the full-resolution level, the ones passthrough serves.

    .venv/bin/python scripts/bench_passthrough.py [--width 16384 --height 12288 --tiles 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

import openslide
import tifffile

from readers.demo_slide import write_demo_slide
from readers.openslide_reader import OpenSlideReader

TS = 256


def _timed(fn, tiles, repeats: int) -> tuple[float, list[int]]:
    """Best-of-``repeats`` seconds per tile for one pass over ``tiles``, and the sizes."""
    best = float("inf")
    sizes: list[int] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sizes = [len(fn(*t)) for t in tiles]
        best = min(best, (time.perf_counter() - t0) / len(tiles))
    return best, sizes


def _open(path: str, passthrough: bool) -> tuple[OpenSlideReader, float]:
    t0 = time.perf_counter()
    reader = OpenSlideReader(path, tile_size=TS, overlap=0, passthrough=passthrough,
                             cache=openslide.OpenSlideCache(64 << 20))
    return reader, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--height", type=int, default=12288)
    ap.add_argument("--tiles", type=int, default=200, help="distinct tiles per pass")
    ap.add_argument("--quality", type=int, default=75, help="render path JPEG quality")
    ap.add_argument("--slide", help="existing slide (default: generate one in a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pt-") as tmp:
        path = args.slide
        if path is None:
            t0 = time.perf_counter()
            path = write_demo_slide(os.path.join(tmp, "bench.tiff"), args.width, args.height,
                                    seed=5)
            print(f"generated {args.width}x{args.height} slide in "
                  f"{time.perf_counter() - t0:.1f} s")
        opens = {flag: [] for flag in (True, False)}
        for _ in range(5):
            for flag in (True, False):
                reader, secs = _open(path, flag)
                opens[flag].append(secs)
                reader.close()
        fast, _ = _open(path, True)
        slow, _ = _open(path, False)
        fd = os.open(path, os.O_RDONLY)  # the baseline: the same bytes by a bare pread
        try:
            info = fast.describe()
            top = info["dz_levels"] - 1
            if fast.stored_tile(top, 0, 0) is None:
                sys.exit("no passthrough on this slide's full-resolution level")
            w, h = info["dz_dimensions"][top]
            interior = [(top, c, r) for r in range(h // TS) for c in range(w // TS)]
            # tissue tiles: passthrough serves these as-is, background ones too, but the
            # render cost is what tissue costs
            tissue = [t for t in interior if fast.stored_tile(*t) is not None]
            tissue.sort(key=lambda t: -len(fast.stored_tile(*t)))
            tiles = tissue[: max(args.tiles * 3, args.tiles)]
            random.Random(0).shuffle(tiles)
            tiles = tiles[: args.tiles]
            q = args.quality

            def passthrough(level: int, col: int, row: int) -> bytes:
                return fast.tile(level, col, row, "jpeg", q)

            def render(level: int, col: int, row: int) -> bytes:
                return slow.tile(level, col, row, "jpeg", q)

            with tifffile.TiffFile(path) as tif:  # the full-resolution level's tile table
                page = tif.pages[0]
                across = -(-page.imagewidth // page.tilewidth)
                offsets, counts = list(page.dataoffsets), list(page.databytecounts)

            def pread(_: int, col: int, row: int) -> bytes:
                i = row * across + col
                return os.pread(fd, counts[i], offsets[i])

            pt, pt_sizes = _timed(passthrough, tiles, 20)
            raw, _ = _timed(pread, tiles, 20)
            cold, r_sizes = _timed(render, tiles, 1)  # first touch: decode from the file
            warm, _ = _timed(render, tiles, 3)  # decoded tiles in OpenSlide's cache
        finally:
            fast.close()
            slow.close()
            os.close(fd)

    print(f"{len(tiles)} distinct interior tissue tiles of level {top} ({w}x{h}), "
          f"{TS}px, render quality {q}")
    print(f"{'path':<34}{'µs/tile':>10}{'tiles/s':>12}{'mean bytes':>12}")
    rows = [
        ("passthrough (reader.tile)", pt, pt_sizes),
        ("  of which os.pread", raw, pt_sizes),
        ("render, cold OpenSlide cache", cold, r_sizes),
        ("render, warm OpenSlide cache", warm, r_sizes),
    ]
    for name, secs, sizes in rows:
        print(f"{name:<34}{secs * 1e6:>10.1f}{1 / secs:>12,.0f}{statistics.mean(sizes):>12,.0f}")
    print(f"speed-up vs render: {cold / pt:,.0f}x (cold), {warm / pt:,.0f}x (warm)")
    print(f"reader open: {statistics.median(opens[True]) * 1e3:.2f} ms with the passthrough "
          f"index, {statistics.median(opens[False]) * 1e3:.2f} ms without (median of 5)")


if __name__ == "__main__":
    main()
