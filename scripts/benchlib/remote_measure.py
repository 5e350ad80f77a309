"""What bench_remote.py measures on one server: the viewer trace (throughput, latency,
opens, remote traffic) and sequential probes (first tile of a never-opened slide, a tile
not cached on an open slide).

Remote counters come from GET /stats: each worker reports, per remote store, round_trips
(remote calls, a batch of concurrent ranged GETs counting once), ranged_requests,
ranged_bytes, errors and remote_seconds; a row sums them over the workers.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import cpu
from .load import LoadPlan, run_load
from .metrics import RunSummary, server_delta, summarize
from .procs import process_tree
from .server import ServerOptions, ServerProcess
from .slides import Geometry, SlideSet
from .trace import TileRequest, TraceSpec, viewer_trace

REMOTE_FIELDS = ("round_trips", "ranged_requests", "ranged_bytes", "errors", "remote_seconds",
                 "frames_fetched")  # the last: DICOMweb stores only (others count 0)
HOME_VIEWPORT = 4  # tiles across the viewer's first (whole-slide) view
WARM_TILES_PER_SLIDE = 3
WARMUP_SLIDES = 2  # opened before a probe, so connection pools are as a running server's
GET_TIMEOUT = 60.0


@dataclass(frozen=True)
class RemoteDelta:
    """Remote-store counters over a run, summed over workers (after minus before)."""

    round_trips: int
    ranged_requests: int
    ranged_bytes: int
    errors: int
    remote_seconds: float
    frames_fetched: int = 0  # DICOMweb stores: frames asked by WADO-RS


def _remote_totals(stats: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{worker id: {field: sum over the worker's remote stores}}."""
    out: dict[str, dict[str, float]] = {}
    for w in stats.get("workers", []):
        sums = dict.fromkeys(REMOTE_FIELDS, 0.0)
        for name, store in (w.get("remote") or {}).items():
            if name != "fetch_cache" and isinstance(store, dict):
                for f in REMOTE_FIELDS:
                    sums[f] += float(store.get(f, 0) or 0)
        out[str(w.get("id"))] = sums
    return out


def remote_delta(before: dict[str, Any], after: dict[str, Any]) -> RemoteDelta:
    b, a = _remote_totals(before), _remote_totals(after)
    total = {f: sum(w[f] - b.get(i, {}).get(f, 0.0) for i, w in a.items())
             for f in REMOTE_FIELDS}
    return RemoteDelta(int(total["round_trips"]), int(total["ranged_requests"]),
                       int(total["ranged_bytes"]), int(total["errors"]),
                       total["remote_seconds"], int(total["frames_fetched"]))


def helper_cpu_seconds(exclude_pgid: int | None) -> float:
    """CPU seconds of this benchmark's live child processes outside the server under test
    (moto, nginx, latency proxies, s3fs, the peer): the stores' share of the machine."""
    me = os.getpid()
    return sum(p.cpu_s for p in process_tree([me]).values()
               if p.pid != me and p.pgrp != exclude_pgid)


@dataclass(frozen=True)
class Target:
    """Where one server reads its slides."""

    store: str  # "local", "s3", "http"
    rtt_ms: float | None  # None for local disk
    slides: str  # --slides
    settings: tuple[tuple[str, str], ...] = ()
    proxy_connections: Callable[[], int] | None = None  # connections the proxy accepted

    @property
    def label(self) -> str:
        return self.store if self.rtt_ms is None else f"{self.store} {self.rtt_ms:g} ms"


@dataclass(frozen=True)
class TraceSetup:
    """The trace and the server settings every trace row shares."""

    slides: SlideSet
    geometries: Mapping[str, Geometry]
    trace: TraceSpec
    viewers: int
    inflight: int
    duration: float
    transport: str
    reader_cache_size: int
    tile_cache_bytes: int
    log_dir: str
    extra: tuple[tuple[str, str], ...] = ()  # --set NAME=VALUE


@dataclass
class TraceRow:
    target: Target
    policy: str
    workers: int
    summary: RunSummary
    remote: RemoteDelta
    proxy_connections: int | None
    helper_cores: float | None  # stores, proxies and peers, average cores
    other_cores: float | None  # the machine minus server, load generator and helpers


def _options(target: Target, workers: int, policy: str, setup: TraceSetup,
             reader_cache_size: int, extra: tuple[tuple[str, str], ...] = ()
             ) -> ServerOptions:
    return ServerOptions(slides=target.slides, workers=workers, policy=policy,
                         reader_cache_size=reader_cache_size,
                         tile_cache_bytes=setup.tile_cache_bytes, gateway_cache_bytes=0,
                         extra=(*target.settings, *setup.extra, *extra))


def _log_path(setup: TraceSetup, *parts: object) -> str:
    return os.path.join(setup.log_dir, "-".join(str(p).replace(" ", "") for p in parts)
                        + ".log")


def run_trace_row(setup: TraceSetup, target: Target, policy: str, workers: int) -> TraceRow:
    """Start a server on ``target``, replay the viewer trace, diff /stats, stop it."""
    started = time.monotonic()
    traces = [viewer_trace(v, setup.trace, setup.slides.names, setup.geometries)
              for v in range(setup.viewers)]
    plan = LoadPlan(setup.transport, setup.inflight, setup.duration, None)
    opts = _options(target, workers, policy, setup, setup.reader_cache_size)
    conns = target.proxy_connections
    with ServerProcess(opts, _log_path(setup, target.label, policy, workers)) as server:
        before, c0 = server.stats(), cpu.sample(server.pgid)
        h0, conns0 = helper_cpu_seconds(server.pgid), conns() if conns else None
        load = asyncio.run(run_load(server.base_url, traces, plan))
        c1, h1 = cpu.sample(server.pgid), helper_cpu_seconds(server.pgid)
        conns1 = conns() if conns else None
        after = server.stats()
    usage = cpu.usage(c0, c1)
    summary = summarize({"store": target.label, "policy": policy, "workers": str(workers)},
                        load, server_delta(before, after), usage,
                        time.monotonic() - started)
    helper = other = None
    if usage is not None and c0 is not None and c1 is not None:
        helper = (h1 - h0) / (c1.at - c0.at)
        other = max(0.0, usage.other - helper)
    return TraceRow(target, policy, workers, summary, remote_delta(before, after),
                    None if conns0 is None or conns1 is None else conns1 - conns0,
                    helper, other)


# --- sequential probes ----------------------------------------------------------------------


class Getter:
    """Sequential GETs on one keep-alive connection (reopened when the server closes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.errors: Counter[str] = Counter()
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> float | None:
        """Milliseconds to a 200 with its whole body; None (counted in ``errors``) else."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                    timeout=GET_TIMEOUT)
        started = time.perf_counter()
        try:
            self._conn.request("GET", path)
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors[type(exc).__name__] += 1
            self.close()
            return None
        took = (time.perf_counter() - started) * 1000.0
        if resp.will_close:
            self.close()
        if resp.status != 200:
            self.errors[f"http_{resp.status}"] += 1
            return None
        return took

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def home_tile(slide: str, geometry: Geometry) -> TileRequest:
    """The centre tile of a viewer's first view: the whole slide in a few tiles."""
    level = geometry.overview_level(HOME_VIEWPORT)
    cols, rows = geometry.tiles[level]
    return TileRequest(slide, level, cols // 2, rows // 2)


def warm_tiles(slide: str, geometry: Geometry, count: int) -> list[TileRequest]:
    """``count`` full-resolution tiles at seeded spots, no two within 2 tiles (so no
    stored tile is shared and each needs its own ranged fetch)."""
    rng = random.Random(f"bench-remote:{slide}")
    level = geometry.max_level
    cols, rows = geometry.tiles[level]
    picked: list[TileRequest] = []
    for _ in range(200):  # bounded: small slides may hold fewer spaced spots
        if len(picked) == count:
            break
        c, r = rng.randrange(cols), rng.randrange(rows)
        if all(abs(c - t.col) > 2 or abs(r - t.row) > 2 for t in picked):
            picked.append(TileRequest(slide, level, c, r))
    return picked


def dz_path(tile: TileRequest) -> str:
    return f"/dz/{tile.slide}_files/{tile.level}/{tile.col}_{tile.row}.jpeg"


@dataclass
class ProbeRow:
    """Sequential requests on a fresh server: first tiles of never-opened slides, then
    tiles not cached on those (now open) slides. ``*_trips``: the remote round trips each
    request took (from /stats after it; empty for servers without /stats)."""

    target: Target
    server: str = "tilerouter"
    first_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    first_trips: list[int] = field(default_factory=list)
    warm_trips: list[int] = field(default_factory=list)
    first_remote: RemoteDelta | None = None
    warm_remote: RemoteDelta | None = None
    errors: Counter[str] = field(default_factory=Counter)

    def warm_fetched_ms(self) -> list[float]:
        """Warm tiles that needed at least one round trip (none of their bytes local)."""
        return [ms for ms, n in zip(self.warm_ms, self.warm_trips, strict=True) if n > 0]


def probe_plan(slides: SlideSet, geometries: Mapping[str, Geometry], count: int
               ) -> tuple[list[TileRequest], list[TileRequest], list[TileRequest]]:
    """(warm-up tiles, first tiles, warm tiles): the first tiles' slides are the first
    ``count`` names, the warm-up uses slides after them."""
    names = slides.names
    count = max(1, min(count, len(names) - WARMUP_SLIDES))
    warmup = [home_tile(n, geometries[n]) for n in names[count:count + WARMUP_SLIDES]]
    first = [home_tile(n, geometries[n]) for n in names[:count]]
    warm = [t for n in names[:count] for t in warm_tiles(n, geometries[n],
                                                         WARM_TILES_PER_SLIDE)]
    return warmup, first, warm


def _timed(getter: Getter, server: ServerProcess, tiles: Sequence[TileRequest],
           ms: list[float], trips: list[int]) -> None:
    """Each tile in turn; its latency and the round trips /stats counted for it."""
    before = remote_delta({}, server.stats()).round_trips
    for tile in tiles:
        took = getter.get(dz_path(tile))
        now = remote_delta({}, server.stats()).round_trips
        if took is not None:
            ms.append(took)
            trips.append(now - before)
        before = now


def run_probe(setup: TraceSetup, target: Target, count: int) -> ProbeRow:
    """One worker that keeps every slide open, prefetch and gateway cache off, so each
    request is exactly an open + tile or a tile read from a slide already open."""
    warmup, first, warm = probe_plan(setup.slides, setup.geometries, count)
    opts = _options(target, 1, "cache-aware", setup, len(setup.slides.names) + 1,
                    (("prefetch", "false"),))
    row = ProbeRow(target)
    with ServerProcess(opts, _log_path(setup, "probe", target.label)) as server:
        getter = Getter(server.port)
        for tile in warmup:
            getter.get(dz_path(tile))
        s0 = server.stats()
        _timed(getter, server, first, row.first_ms, row.first_trips)
        s1 = server.stats()
        _timed(getter, server, warm, row.warm_ms, row.warm_trips)
        s2 = server.stats()
        getter.close()
        row.errors = getter.errors
    row.first_remote, row.warm_remote = remote_delta(s0, s1), remote_delta(s1, s2)
    return row
