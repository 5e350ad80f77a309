"""The benchmark's slide set (generated once, then reused) and its DeepZoom geometry."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator

from config.settings import Settings
from readers.demo_slide import write_demo_slide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideSet:
    root: str  # the directory served as --slides
    names: tuple[str, ...]  # slide paths relative to root, most popular first


@dataclass(frozen=True)
class Geometry:
    """DeepZoom tile grid of one slide: ``tiles[level] == (cols, rows)``."""

    tiles: tuple[tuple[int, int], ...]

    @property
    def max_level(self) -> int:
        return len(self.tiles) - 1

    def overview_level(self, viewport: int) -> int:
        """Deepest level whose whole grid fits in a ``viewport`` x ``viewport`` view."""
        fitting = [lv for lv, (c, r) in enumerate(self.tiles) if c <= viewport and r <= viewport]
        return max(fitting, default=0)


def _generate(job: tuple[str, int, int, int]) -> float:
    path, width, height, seed = job
    started = time.monotonic()
    write_demo_slide(path, width, height, seed=seed)
    return time.monotonic() - started


def ensure_slides(cache_dir: str, count: int, width: int, height: int, seed: int,
                  procs: int = 1) -> SlideSet:
    """Generate ``count`` demo slides under ``cache_dir`` unless they are already there
    (``procs`` at a time)."""
    root = os.path.join(cache_dir, f"{width}x{height}-seed{seed}")
    os.makedirs(root, exist_ok=True)
    names = tuple(f"slide-{i:02d}.tiff" for i in range(count))
    todo = [(os.path.join(root, name), width, height, seed + i)
            for i, name in enumerate(names) if not os.path.exists(os.path.join(root, name))]
    if todo:
        log.info("generating %d slide(s) %dx%d in %s", len(todo), width, height, root)
    if len(todo) > 1 and procs > 1:
        with mp.get_context("spawn").Pool(min(procs, len(todo))) as pool:
            took = pool.imap(_generate, todo)
            for (path, *_), seconds in zip(todo, took, strict=True):
                log.info("generated %s in %.1fs", path, seconds)
    else:
        for job in todo:
            log.info("generated %s in %.1fs", job[0], _generate(job))
    return SlideSet(root, names)


def slide_geometry(path: str, settings: Settings) -> Geometry:
    """The tile grid the server will use (same DeepZoom parameters as its settings)."""
    with OpenSlide(path) as slide:
        dz = DeepZoomGenerator(slide, settings.tile_size, settings.overlap,
                               settings.limit_bounds)
        return Geometry(tuple((int(c), int(r)) for c, r in dz.level_tiles))
