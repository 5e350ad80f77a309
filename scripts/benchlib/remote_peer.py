"""Measuring bench_remote.py's peer (``fuse_peer``): OpenSlide's DeepZoom server on an
s3fs mount of the benchmark bucket, behind the latency proxy of one RTT.

Per RTT: a fresh mount and server for the probes (first tiles of never-opened slides,
then tiles not cached on them, as ``remote_measure.run_probe``), then another fresh mount
and server for the viewer trace, so neither inherits the other's caches. The peer has no
/stats: the proxy's counters give the connections it opened and the bytes it pulled.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import cpu
from .fuse_peer import S3fsMount, fuse_unavailable, run_path_load
from .load import LoadPlan
from .metrics import RunSummary, server_delta, summarize
from .peers_common import DZ
from .peers_install import ensure_flask_venv, ensure_multiserver
from .peers_servers import Peer, Processes, start_openslide, wait_ready
from .procs import process_tree
from .remote_measure import (
    Getter,
    ProbeRow,
    Target,
    TraceSetup,
    helper_cpu_seconds,
    probe_plan,
)
from .remote_stores import BUCKET, PREFIX, BenchStores
from .trace import viewer_trace

SERVER = "OpenSlide DeepZoom server on s3fs"


@dataclass
class PeerRow:
    rtt_ms: float
    summary: RunSummary | None = None
    probe: ProbeRow | None = None
    probe_bytes: int = 0  # bytes the proxy passed to s3fs during the first tiles
    probe_connections: int = 0
    trace_connections: int = 0
    server_cores: float | None = None  # the DeepZoom server and s3fs together
    helper_cores: float | None = None  # moto, nginx and proxies
    error: str = ""


@dataclass
class PeerTools:
    """The DeepZoom server script and a Python with Flask for it, or why there are none."""

    python: str = ""
    script: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def prepare(workdir: str) -> PeerTools:
    """Check FUSE and install what the peer needs; ``skipped`` says why it cannot run."""
    reason = fuse_unavailable()
    if reason:
        return PeerTools(skipped=f"FUSE unusable here: {reason}")
    try:
        script = ensure_multiserver(workdir)
        python = ensure_flask_venv(workdir)
    except Exception as exc:  # pip, venv, tar: any failure only skips the peer
        return PeerTools(skipped=f"could not install OpenSlide's DeepZoom server: {exc}")
    return PeerTools(python, script)


def _stats(stores: BenchStores, rtt_ms: float) -> dict[str, int]:
    return stores.proxy_stats("s3")[f"{rtt_ms:g}"]


def _tree_cpu(pids: list[int]) -> float:
    return sum(p.cpu_s for p in process_tree(pids).values())


def _gets(getter: Getter, paths: list[str]) -> list[float]:
    return [ms for ms in map(getter.get, paths) if ms is not None]


def _start(ps: Processes, tools: PeerTools, mount: S3fsMount, warmup: list[str]) -> Peer:
    peer = start_openslide(ps, mount.path, DZ, tools.python, tools.script)
    wait_ready(peer, warmup, timeout=60.0)
    return peer


def _stop(ps: Processes, peer: Peer) -> None:
    for proc in peer.procs:
        ps.stop(proc)


def measure_peer(setup: TraceSetup, stores: BenchStores, tools: PeerTools, rtt_ms: float,
                 probe_count: int) -> PeerRow:
    """Probes, then the viewer trace, against the peer at ``rtt_ms``."""
    row = PeerRow(rtt_ms)
    ps = Processes(setup.log_dir)
    warmup, first, warm = probe_plan(setup.slides, setup.geometries, probe_count)
    warm_names = [t.slide for t in warmup]
    endpoint = stores.proxy_url("s3", rtt_ms)
    log = os.path.join(setup.log_dir, f"s3fs-{rtt_ms:g}ms")
    target = Target("s3fs", rtt_ms, "")
    try:
        with S3fsMount(BUCKET, PREFIX, endpoint, log + "-probe.log") as mount:
            peer = _start(ps, tools, mount, warm_names)
            try:
                probe = ProbeRow(target, SERVER)
                getter = Getter(peer.port)
                p0 = _stats(stores, rtt_ms)
                probe.first_ms = _gets(getter, [peer.tile_path(t) for t in first])
                p1 = _stats(stores, rtt_ms)
                probe.warm_ms = _gets(getter, [peer.tile_path(t) for t in warm])
                getter.close()
                probe.errors = getter.errors
                row.probe = probe
                row.probe_bytes = p1["bytes_down"] - p0["bytes_down"]
                row.probe_connections = p1["connections"] - p0["connections"]
            finally:
                _stop(ps, peer)
        with S3fsMount(BUCKET, PREFIX, endpoint, log + "-trace.log") as mount:
            peer = _start(ps, tools, mount, warm_names)
            try:
                _trace(setup, stores, row, peer, mount)
            finally:
                _stop(ps, peer)
    except Exception as exc:  # the peer failing is a result to print, not a crash
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        ps.sweep()
    return row


def _trace(setup: TraceSetup, stores: BenchStores, row: PeerRow, peer: Peer,
           mount: S3fsMount) -> None:
    traces = [viewer_trace(v, setup.trace, setup.slides.names, setup.geometries)
              for v in range(setup.viewers)]
    plan = LoadPlan("http", setup.inflight, setup.duration, None)
    pids = [p.pid for p in peer.procs] + ([mount.proc.pid] if mount.proc else [])
    started = time.monotonic()
    pgid = peer.procs[0].pid  # the server leads its own process group
    s0, c0 = _stats(stores, row.rtt_ms), cpu.sample(pgid)
    t0, h0 = _tree_cpu(pids), helper_cpu_seconds(None)
    load = asyncio.run(run_path_load(peer.port, traces, plan, peer.tile_path))
    t1, h1 = _tree_cpu(pids), helper_cpu_seconds(None)
    s1, c1 = _stats(stores, row.rtt_ms), cpu.sample(pgid)
    row.trace_connections = s1["connections"] - s0["connections"]
    if c0 is not None and c1 is not None and c1.at > c0.at:
        span = c1.at - c0.at
        row.server_cores = (t1 - t0) / span
        row.helper_cores = max(0.0, (h1 - h0) - (t1 - t0)) / span
    empty: dict[str, Any] = {}
    row.summary = summarize({"store": f"s3 {row.rtt_ms:g} ms", "policy": "-", "workers": "1"},
                            load, server_delta(empty, empty), cpu.usage(c0, c1),
                            time.monotonic() - started)
