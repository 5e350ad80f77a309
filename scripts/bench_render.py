#!/usr/bin/env python3
"""Rendering through OpenSlide vs from stored tiles decoded by Pillow: CPU ms per tile.

Two OpenSlideReaders on the same generated slide (or --slide), each with a 64 MiB
OpenSlideCache: one renders through ``DeepZoomGenerator.get_tile`` (decoded_cache off),
the other cuts tiles from stored JPEG tiles (readers/stored_levels.py, 64 MiB decoded
cache). Two orders over the same tiles: "shuffled" (random tiles of the top --levels
DeepZoom levels, like bench_peers' distinct list: almost no stored tile is reused) and
"panning" (row by row through a window, as a viewer pans: neighbours share stored tiles).
Also IIIF regions (1024x1024 of level 0 scaled to 512x512). Prints one table; asserts
nothing except that both paths return the same bytes.

    .venv/bin/python scripts/bench_render.py [--tiles 600 --geometry 254/1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import openslide

from readers.base import RegionRequest
from readers.demo_slide import write_demo_slide
from readers.openslide_reader import OpenSlideReader
from readers.stored_levels import DecodedTiles

Q = 75


def _reader(path: str, size: int, overlap: int, stored: bool) -> OpenSlideReader:
    return OpenSlideReader(path, tile_size=size, overlap=overlap, passthrough=False,
                           cache=openslide.OpenSlideCache(64 << 20),
                           decoded=DecodedTiles(64 << 20) if stored else None)


def _cpu_ms(fn: Callable[[], object], count: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / count * 1000


def _tile_orders(reader: OpenSlideReader, levels: int, count: int, seed: int
                 ) -> dict[str, list[tuple[int, int, int]]]:
    info = reader.describe()
    tiles = info["dz_tiles"]
    rng = random.Random(seed)
    top = info["dz_levels"] - 1
    every = [(lv, c, r) for lv in range(top - levels + 1, top + 1)
             for c in range(tiles[lv][0]) for r in range(tiles[lv][1])]
    cols, rows = tiles[top]
    side = max(1, int(count ** 0.5))
    c0, r0 = rng.randrange(max(1, cols - side)), rng.randrange(max(1, rows - side))
    panning = [(top, c, r) for r in range(r0, min(rows, r0 + side))
               for c in range(c0, min(cols, c0 + side))]
    return {"shuffled": rng.sample(every, min(count, len(every))), "panning": panning}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=32768)
    ap.add_argument("--height", type=int, default=24576)
    ap.add_argument("--tiles", type=int, default=600, help="tiles per order")
    ap.add_argument("--levels", type=int, default=4, help="top DeepZoom levels (shuffled)")
    ap.add_argument("--regions", type=int, default=60, help="IIIF regions")
    ap.add_argument("--geometry", default="254/1", help="DeepZoom tile size/overlap")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slide", help="existing slide (default: generate one in a temp dir)")
    args = ap.parse_args(argv)
    size, overlap = (int(v) for v in args.geometry.split("/"))

    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        path = args.slide or write_demo_slide(f"{tmp}/bench.tiff", args.width, args.height,
                                              seed=args.seed)
        probe = _reader(path, size, overlap, False)
        orders = _tile_orders(probe, args.levels, args.tiles, args.seed)
        w, h = probe.describe()["level_dimensions"][0]
        probe.close()
        rng = random.Random(args.seed)
        regions = [RegionRequest(rng.randrange(w - 1024), rng.randrange(h - 1024), 1024, 1024,
                                 512, 512) for _ in range(args.regions)]

        def compare(label: str, items: Sequence[Any],
                    work: Callable[[OpenSlideReader, Any], Any]) -> tuple:
            """(label, count, OpenSlide ms, stored ms, same bytes?) for one workload."""
            got: dict[bool, list[Any]] = {}
            ms: dict[bool, float] = {}
            for stored in (False, True):
                reader = _reader(path, size, overlap, stored)
                got[stored] = []
                ms[stored] = _cpu_ms(
                    lambda r=reader, o=got[stored]: o.extend(work(r, i) for i in items),
                    len(items))
                reader.close()
            return (label, len(items), ms[False], ms[True],
                    "yes" if got[False] == got[True] else "NO")

        rows = [compare(f"tiles {args.geometry}, {name}", tiles,
                        lambda r, t: r.tile(*t, "jpeg", Q)) for name, tiles in orders.items()]
        rows.append(compare("IIIF 1024 -> 512 regions", regions,
                            lambda r, q: r.region(q, 4096 * 4096, Q)))

    print(f"slide {args.width}x{args.height} (generated, 256 px JPEG tiles, 2x pyramid)"
          if not args.slide else f"slide {args.slide}")
    print("| workload | count | OpenSlide CPU ms | stored tiles CPU ms | speed-up | same bytes |")
    print("|---|--:|--:|--:|--:|---|")
    for label, count, slow, fast, same in rows:
        print(f"| {label} | {count} | {slow:.2f} | {fast:.2f} | {slow / fast:.2f}x | {same} |")


if __name__ == "__main__":
    main()
