"""OpenSlide itself, in-process: ``DeepZoomGenerator.get_tile`` + Pillow JPEG on the same
distinct tiles as the servers, no HTTP (what the worker cores could render at best)."""

from __future__ import annotations

import argparse
import io
import itertools
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from typing import Any

import openslide
from openslide.deepzoom import DeepZoomGenerator

from .cpu import machine_busy_seconds
from .peers_common import OWN_CORES_RAW, QUALITY, WORKERS, Geometry, Tile
from .peers_tiles import TileSet
from .peers_wrk import OTHER_LIMIT, Result, best_of_attempts


def _render_proc(paths: dict[str, str], tiles: list[Tile], geo: Geometry, duration: float,
                 ready: Any, start: Any, results: Any, cpu: int | None = None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    cache = openslide.OpenSlideCache(64 << 20)  # as a tilerouter worker (openslide_cache_bytes)
    gens = {}
    for name, path in paths.items():
        osr = openslide.OpenSlide(path)
        osr.set_cache(cache)
        gens[name] = DeepZoomGenerator(osr, geo.tile_size, geo.overlap, limit_bounds=True)
    ready.put(os.getpid())
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    end = t0 + duration
    n = 0
    for name, level, col, row in itertools.cycle(tiles):
        buf = io.BytesIO()
        gens[name].get_tile(level, (col, row)).save(buf, "jpeg", quality=QUALITY)
        n += 1
        if time.perf_counter() >= end:
            break
    results.put((n, time.perf_counter() - t0, time.process_time() - cpu0, n > len(tiles)))


def raw_render(slides: dict[str, str], ts: TileSet, args: argparse.Namespace,
               procs: int = WORKERS, cpus: Sequence[int] = ()) -> Result:
    """OpenSlide's own rate on `procs` processes (or one pinned to each of ``cpus``),
    redone while others load the machine."""
    def once(attempt: int) -> Result:
        r = _raw_render_once(slides, ts, args.duration, len(cpus) or procs, cpus)
        r.raw["attempt"] = attempt
        return r

    return best_of_attempts(args, once)


def _raw_render_once(slides: dict[str, str], ts: TileSet, duration: float, procs: int,
                     cpus: Sequence[int] = ()) -> Result:
    ctx = mp.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_render_proc, daemon=True,
                           args=(slides, ts.distinct[i::procs], ts.geometry, duration, ready,
                                 start, results, cpus[i] if cpus else None))
               for i in range(procs)]
    try:
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=120)
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        start.set()
        got = [results.get(timeout=duration + 120) for _ in workers]
        busy1, wall = machine_busy_seconds(), time.monotonic() - t0
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(5)
    rate = sum(n / secs for n, secs, _, _ in got)
    cpu = sum(c for _, _, c, _ in got)
    other = max(0.0, (busy1 - busy0) - cpu) / wall
    wrapped = any(w for _, _, _, w in got)
    note = f"{procs} processes: get_tile + Pillow JPEG q{QUALITY}, no HTTP"
    note += f", pinned to CPUs {','.join(map(str, cpus))}" if cpus else ""
    note += "; LIST WRAPPED" if wrapped else ""
    note += f", OTHER LOAD {other:.2f} cores" if other > OTHER_LIMIT else ""
    return Result(OWN_CORES_RAW if cpus else "OpenSlide in-process", ts.geometry.label,
                  "distinct",
                  tiles_per_s=rate, cores=cpu / duration,
                  cpu_per_1000=cpu / sum(n for n, _, _, _ in got) * 1000, note=note,
                  raw={"other_cores": other, "cpu_s": cpu, "wall_s": wall})
