"""The slides and tile lists every peer is measured on, and the correctness check of one
tile per peer against OpenSlide's own DeepZoomGenerator."""

from __future__ import annotations

import io
import os
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from .peers_common import Geometry, Tile, http_get, say
from .peers_servers import Peer
from .slides import ensure_slides

SLIDE_SEED = 1000


def peer_slides(workdir: str, count: int, width: int, height: int) -> dict[str, str]:
    """Slide name -> path of ``count`` generated slides (made once, 2 at a time)."""
    slides = ensure_slides(os.path.join(workdir, "slides"), count, width, height,
                           seed=SLIDE_SEED, procs=2)
    say(f"{count} slide(s) {width}x{height} in {slides.root}")
    return {name: os.path.join(slides.root, name) for name in slides.names}


@dataclass
class TileSet:
    geometry: Geometry
    distinct: list[Tile]
    hot: list[Tile]
    probe: Tile  # an interior full-resolution tile, for the correctness check
    dzi: dict[str, tuple[int, int]]  # slide -> width, height


def warm_page_cache(paths: Iterable[str]) -> None:
    """Read every slide once, so that the first server measured does not pay for disk
    reads that every later one finds in the page cache."""
    t0, total = time.monotonic(), 0
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 << 20):
                total += len(chunk)
    say(f"read {total / 1e9:.1f} GB of slides into the page cache in "
        f"{time.monotonic() - t0:.1f}s")


def _deepzoom(osr: openslide.OpenSlide, geo: Geometry) -> DeepZoomGenerator:
    return DeepZoomGenerator(osr, geo.tile_size, geo.overlap, limit_bounds=True)


def tile_set(slides: dict[str, str], geo: Geometry, levels: int, hot: int, seed: int
             ) -> TileSet:
    """Every tile of the top ``levels`` levels, shuffled; ``hot`` interior top-level ones."""
    distinct: list[Tile] = []
    top_interior: list[Tile] = []
    dims: dict[str, tuple[int, int]] = {}
    for name, path in slides.items():
        with openslide.OpenSlide(path) as osr:
            dz = _deepzoom(osr, geo)
            top = dz.level_count - 1
            dims[name] = dz.level_dimensions[top]
            for level in range(top - levels + 1, top + 1):
                cols, rows = dz.level_tiles[level]
                distinct += [(name, level, c, r) for r in range(rows) for c in range(cols)]
            cols, rows = dz.level_tiles[top]
            top_interior += [(name, top, c, r) for r in range(1, rows - 1)
                             for c in range(1, cols - 1)]
    random.Random(seed).shuffle(distinct)
    hot_tiles = random.Random(seed + 1).sample(top_interior, hot)
    return TileSet(geo, distinct, hot_tiles, _busiest(slides, geo, top_interior, seed), dims)


def _busiest(slides: dict[str, str], geo: Geometry, tiles: list[Tile], seed: int) -> Tile:
    """Of 40 sampled tiles, the one with the most detail: a blank background tile would
    survive any JPEG re-encoding unchanged and prove nothing in the pixel comparison."""
    best, best_std = tiles[0], -1.0
    for name, level, col, row in random.Random(seed + 2).sample(tiles, min(40, len(tiles))):
        with openslide.OpenSlide(slides[name]) as osr:
            std = float(np.asarray(_deepzoom(osr, geo).get_tile(level, (col, row)),
                                   np.float32).std())
        if std > best_std:
            best, best_std = (name, level, col, row), std
    return best


def check_peer(peer: Peer, ts: TileSet, slides: dict[str, str]) -> list[str]:
    """DZI geometry and one interior tile: decodes as JPEG of the expected size; pixels
    compared with OpenSlide's own DeepZoomGenerator tile. Returns findings (never fails)."""
    out = []
    name, level, col, row = ts.probe
    status, body, _ = http_get(peer.url(peer.dzi_path(name)))
    if status != 200:
        out.append(f"DZI {status}")
    else:
        try:
            root = ET.fromstring(body)
            size = root.find("{*}Size")
            got = (int(root.get("TileSize", -1)), int(root.get("Overlap", -1)),
                   int(size.get("Width", -1)) if size is not None else -1,
                   int(size.get("Height", -1)) if size is not None else -1)
            want = (peer.geometry.tile_size, peer.geometry.overlap, *ts.dzi[name])
            out.append("DZI ok" if got == want else f"DZI MISMATCH {got} != {want}")
        except (ET.ParseError, ValueError) as exc:
            out.append(f"DZI unparsable: {exc}")
    status, body, ctype = http_get(peer.url(peer.tile_path(ts.probe)))
    if status != 200:
        return [*out, f"tile {status}: {body[:120]!r}"]
    try:
        img = Image.open(io.BytesIO(body))
        fmt = img.format
        img = img.convert("RGB")
    except OSError as exc:
        return [*out, f"tile does not decode: {exc}"]
    expect = peer.geometry.tile_size + 2 * peer.geometry.overlap
    size_ok = img.size == (expect, expect)
    out.append(f"tile {fmt} {img.size[0]}x{img.size[1]} ({ctype})"
               + ("" if size_ok and fmt == "JPEG" else f" MISMATCH, want JPEG {expect}x{expect}"))
    with openslide.OpenSlide(slides[name]) as osr:
        ref = _deepzoom(osr, peer.geometry).get_tile(level, (col, row)).convert("RGB")
    if ref.size == img.size:
        diff = np.abs(np.asarray(img, np.int16) - np.asarray(ref, np.int16))
        out.append(f"vs OpenSlide pixels: mean |diff| {diff.mean():.2f}, max {diff.max()}")
    return out
