"""The remote benchmark's slide set: generic tiled TIFFs mixed with Aperio SVS files.

A remote store reads both kinds by ranges, but an SVS opens with more to fetch (stripped
thumbnail, label and macro images), so the set holds both. Generated once into a folder
named by its parameters, then reused; ``procs`` slides are written at a time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from config.settings import Settings
from readers.demo_slide import write_demo_slide

from .procs import run_jobs
from .slides import Geometry, SlideSet, slide_geometry

log = logging.getLogger(__name__)


def slide_names(count: int, svs_every: int) -> tuple[str, ...]:
    """``slide-00.tiff``, ...; every ``svs_every``-th one (0 = none) an Aperio ``.svs``."""
    def name(i: int) -> str:
        svs = svs_every > 0 and i % svs_every == svs_every - 1
        return f"slide-{i:02d}.{'svs' if svs else 'tiff'}"
    return tuple(name(i) for i in range(count))


def _generate(job: tuple[str, int, int, int]) -> float:
    path, width, height, seed = job
    started = time.monotonic()
    write_demo_slide(path, width, height, seed=seed, aperio=path.endswith(".svs"))
    return time.monotonic() - started


def ensure_mixed_slides(cache_dir: str, count: int, width: int, height: int, seed: int,
                        svs_every: int = 3, procs: int = 2) -> SlideSet:
    """``count`` slides of ``width`` x ``height`` under ``cache_dir`` (generated if
    missing); the folder holds exactly these, as it is uploaded and served whole."""
    root = os.path.join(cache_dir, f"{width}x{height}-seed{seed}-n{count}-svs{svs_every}")
    os.makedirs(root, exist_ok=True)
    names = slide_names(count, svs_every)
    todo = [(os.path.join(root, name), width, height, seed + i)
            for i, name in enumerate(names) if not os.path.exists(os.path.join(root, name))]
    if todo:
        log.info("generating %d slide(s) %dx%d in %s (%d at a time)", len(todo), width,
                 height, root, procs)
        started = time.monotonic()
        run_jobs(_generate, todo, procs)
        log.info("generated %d slides in %.0f s", len(todo), time.monotonic() - started)
    return SlideSet(root, names)


def geometries(slides: SlideSet, settings: Settings) -> Mapping[str, Geometry]:
    """Each slide's DeepZoom tile grid under the settings the servers run with."""
    return {n: slide_geometry(os.path.join(slides.root, n), settings) for n in slides.names}


def total_bytes(slides: SlideSet) -> int:
    return sum(os.path.getsize(os.path.join(slides.root, n)) for n in slides.names)
