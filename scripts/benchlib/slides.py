"""The benchmark's slide set (generated once, then reused) and its DeepZoom geometry."""

from __future__ import annotations

import logging
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


def ensure_slides(cache_dir: str, count: int, width: int, height: int, seed: int) -> SlideSet:
    """Generate ``count`` demo slides under ``cache_dir`` unless they are already there."""
    root = os.path.join(cache_dir, f"{width}x{height}-seed{seed}")
    os.makedirs(root, exist_ok=True)
    names = tuple(f"slide-{i:02d}.tiff" for i in range(count))
    for i, name in enumerate(names):
        path = os.path.join(root, name)
        if os.path.exists(path):
            continue
        started = time.monotonic()
        write_demo_slide(path, width, height, seed=seed + i)
        log.info("generated %s in %.1fs", path, time.monotonic() - started)
    return SlideSet(root, names)


def slide_geometry(path: str, settings: Settings) -> Geometry:
    """The tile grid the server will use (same DeepZoom parameters as its settings)."""
    with OpenSlide(path) as slide:
        dz = DeepZoomGenerator(slide, settings.tile_size, settings.overlap,
                               settings.limit_bounds)
        return Geometry(tuple((int(c), int(r)) for c, r in dz.level_tiles))
