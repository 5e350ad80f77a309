#!/usr/bin/env python3
"""tilerouter benchmark: the real system under seeded pan/zoom load, one row per configuration.

Generates (once) a slide set, then for every configuration starts ``tilerouter serve``,
replays the same viewer trace over websocket or HTTP, reads /stats before and after, and
stops the server. Prints a markdown table; never asserts anything about timing.

  .venv/bin/python scripts/bench.py                          # workers 1,2,N over ws
  .venv/bin/python scripts/bench.py --transport ws,http      # both transports
  .venv/bin/python scripts/bench.py --policies cache-aware,round-robin,least-loaded
  .venv/bin/python scripts/bench.py --quick                  # ~30 s smoke test

Comparing policies (more than one in --policies) defaults to N workers with small
per-worker caches and the gateway's hot-tile cache off, so that routing decides which
worker cache a repeat hits: each worker's reader cache holds its share of the slides
(--num-slides / N, so all slides fit in all workers together but not in one) and
--tile-cache-bytes 8000000.

Columns (server counters are deltas over the load, from GET /stats):
  tiles/s, p50..max ms   tiles answered OK per second; client-side latency of every request
  affinity hit           routing.affinity_hits / (affinity_hits + affinity_misses)
  tile-cache hit         sum of workers' tile_cache.hits / (hits + misses)
  decoded hit            the same for the workers' decoded stored-tile caches (a DeepZoom
                         tile is cut from up to four stored tiles; neighbours share them)
  gw saved               tile requests the gateway answered itself (hot-tile hits + coalesced)
  opens/1k tiles         reader opens per 1000 tiles (n/a: /stats does not expose opens)
  busy max/mean s        workers' busy_seconds (time with work in flight): imbalance
  idle-wait s            routing.idle_worker_seconds_waiting
  unique tiles (MB)      distinct tiles the clients received, and their bytes
  cores ...              average CPU cores used by gateway, router, workers, this load
                         generator and anything else on the machine (from /proc)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from benchlib import cpu
from benchlib.args import (
    parse_choices,
    parse_settings,
    parse_size,
    parse_workers,
    positive_int,
)
from benchlib.load import LoadPlan, run_load
from benchlib.metrics import RunSummary, server_delta, summarize
from benchlib.report import markdown_table
from benchlib.server import (
    REPO,
    ServerError,
    ServerOptions,
    ServerProcess,
    supported_setting,
)
from benchlib.slides import Geometry, SlideSet, ensure_slides, slide_geometry
from benchlib.trace import TraceSpec, viewer_trace

from config.settings import POLICIES, load_settings

log = logging.getLogger("bench")

DEFAULT_DURATION = 15.0
QUICK_DURATION = 5.0
QUICK_CONCURRENCY = 8
POLICY_TILE_CACHE_BYTES = 8_000_000
TRANSPORTS = ("ws", "http")


@dataclass(frozen=True)
class BenchOptions:
    """The command line with every mode-dependent default resolved."""

    transports: tuple[str, ...]
    workers: tuple[int, ...]
    policies: tuple[str, ...]
    concurrency: int
    inflight: int
    duration: float | None
    requests: int | None
    trace: TraceSpec
    reader_cache_size: int | None
    tile_cache_bytes: int | None
    gateway_cache_bytes: int | None
    open_latency: float | None
    slides_dir: str
    num_slides: int
    slide_size: tuple[int, int]
    json_path: str | None
    keep_logs: bool
    server_log_level: str
    settings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RunConfig:
    transport: str
    workers: int
    policy: str

    def label(self) -> dict[str, str]:
        return {"transport": self.transport, "workers": str(self.workers),
                "policy": self.policy}

    def __str__(self) -> str:
        return f"{self.transport}/w{self.workers}/{self.policy}"


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--transport", default=None,
                   help="ws, http or ws,http (default ws; --quick: ws,http)")
    p.add_argument("--workers", default=None,
                   help="worker counts, N = CPU count (default 1,2,N; comparing policies: N)")
    p.add_argument("--policies", default="cache-aware", help="routing policies to compare")
    p.add_argument("-c", "--concurrency", type=positive_int, default=None,
                   help="virtual viewers (default 16; --quick: 8)")
    p.add_argument("--inflight", type=positive_int, default=16,
                   help="requests in flight per viewer (ws) / keep-alive connections (http)")
    p.add_argument("--duration", type=float, default=None,
                   help=f"seconds of load per configuration (default {DEFAULT_DURATION:g})")
    p.add_argument("--requests", type=positive_int, default=None,
                   help="total tile requests per configuration instead of a duration")
    p.add_argument("--seed", type=int, default=1, help="trace seed")
    p.add_argument("--hot", action="store_true", help="put 50%% of sessions on one slide")
    p.add_argument("--switch-every", type=positive_int, default=20,
                   help="steps before switching slide")
    p.add_argument("--client-cache", type=int, default=200,
                   help="tiles each viewer keeps and never re-asks for (OpenSeadragon: 200)")
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of slide popularity")
    p.add_argument("--reader-cache-size", type=int, default=None,
                   help="open slides per worker (comparing policies: 2)")
    p.add_argument("--tile-cache-bytes", type=lambda s: int(float(s)), default=None,
                   help="tile cache per worker (comparing policies: 8000000)")
    p.add_argument("--gateway-cache-bytes", type=lambda s: int(float(s)), default=None,
                   help="gateway hot-tile cache, if this checkout has one "
                        "(comparing policies: 0)")
    p.add_argument("--open-latency", type=float, default=None,
                   help="extra seconds per slide open in the workers (slow storage)")
    p.add_argument("--slides-dir", default="/tmp/tilerouter-bench-slides",
                   help="slide cache directory (reused)")
    p.add_argument("--num-slides", type=positive_int, default=8)
    p.add_argument("--slide-size", type=parse_size, default=(6000, 4500), help="WxH pixels")
    p.add_argument("--quick", action="store_true", help="smoke test, about 30 s in total")
    p.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    p.add_argument("--server-log-level", default="WARNING", help="log level of the server")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="any other server setting, e.g. --set prefetch=false (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_options(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchOptions:
    """Apply the defaults that depend on --quick and on whether policies are compared."""
    try:
        policies = parse_choices(ns.policies, POLICIES, "--policies")
        comparing = len(policies) > 1
        default_workers = "N" if comparing else ("1,N" if ns.quick else "1,2,N")
        workers = parse_workers(ns.workers or default_workers)
        transports = parse_choices(ns.transport or ("ws,http" if ns.quick else "ws"),
                                   TRANSPORTS, "--transport")
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    duration = ns.duration
    if duration is None and ns.requests is None:
        duration = QUICK_DURATION if ns.quick else DEFAULT_DURATION
    gateway_cache = ns.gateway_cache_bytes
    if gateway_cache is None and comparing:
        gateway_cache = 0
    if gateway_cache is not None and not supported_setting("gateway_cache_bytes"):
        log.warning("this checkout has no gateway_cache_bytes setting; not passing it")
        gateway_cache = None
    return BenchOptions(
        transports=transports, workers=workers, policies=policies,
        concurrency=ns.concurrency or (QUICK_CONCURRENCY if ns.quick else 16),
        inflight=ns.inflight, duration=duration, requests=ns.requests,
        trace=TraceSpec(seed=ns.seed, zipf_s=ns.zipf_s, switch_every=ns.switch_every,
                        client_cache=ns.client_cache,
                        hot=ns.hot),
        reader_cache_size=ns.reader_cache_size if ns.reader_cache_size is not None
        else (-(-ns.num_slides // max(workers)) if comparing else None),
        tile_cache_bytes=ns.tile_cache_bytes if ns.tile_cache_bytes is not None
        else (POLICY_TILE_CACHE_BYTES if comparing else None),
        gateway_cache_bytes=gateway_cache, open_latency=ns.open_latency,
        slides_dir=ns.slides_dir, num_slides=ns.num_slides, slide_size=ns.slide_size,
        json_path=ns.json_path, keep_logs=ns.keep_logs, server_log_level=ns.server_log_level,
        settings=parse_settings(ns.settings, parser),
    )


# --- one configuration -------------------------------------------------------------------


def plan_configs(opts: BenchOptions) -> list[RunConfig]:
    return [RunConfig(t, w, p)
            for t, w, p in itertools.product(opts.transports, opts.workers, opts.policies)]


def request_budgets(total: int | None, viewers: int) -> list[int] | None:
    """``total`` requests split over the viewers (the first ones get the remainder)."""
    if total is None:
        return None
    return [total // viewers + (1 if v < total % viewers else 0) for v in range(viewers)]


def server_options(cfg: RunConfig, opts: BenchOptions, slides: SlideSet) -> ServerOptions:
    return ServerOptions(slides=slides.root, workers=cfg.workers, policy=cfg.policy,
                         reader_cache_size=opts.reader_cache_size,
                         tile_cache_bytes=opts.tile_cache_bytes,
                         gateway_cache_bytes=opts.gateway_cache_bytes,
                         open_latency=opts.open_latency, log_level=opts.server_log_level,
                         extra=opts.settings)


def run_config(cfg: RunConfig, opts: BenchOptions, slides: SlideSet,
               geometries: dict[str, Geometry], log_dir: str) -> RunSummary:
    """Start the server, replay the trace, diff /stats, stop the server."""
    started = time.monotonic()
    log_path = os.path.join(log_dir, str(cfg).replace("/", "-") + ".log")
    traces = [viewer_trace(v, opts.trace, slides.names, geometries)
              for v in range(opts.concurrency)]
    plan = LoadPlan(cfg.transport, opts.inflight, opts.duration,
                    request_budgets(opts.requests, opts.concurrency))
    with ServerProcess(server_options(cfg, opts, slides), log_path) as server:
        log.info("%s: server up in %.1fs; loading", cfg, time.monotonic() - started)
        before, cpu_before = server.stats(), cpu.sample(server.pgid)
        load = asyncio.run(run_load(server.base_url, traces, plan))
        cpu_after, after = cpu.sample(server.pgid), server.stats()
    summary = summarize(cfg.label(), load, server_delta(before, after),
                        cpu.usage(cpu_before, cpu_after), time.monotonic() - started)
    if summary.extra["worker_deaths"]:
        log.warning("%s: %d worker deaths during the run (see %s)", cfg,
                    summary.extra["worker_deaths"], log_path)
    log.info("%s: %d tiles, %.1f tiles/s, p50 %.1f ms, errors %s, prefetches %s", cfg,
             summary.tiles, summary.tiles_per_s, summary.p50_ms, summary.errors or 0,
             summary.extra["prefetches"])
    return summary


# --- output --------------------------------------------------------------------------------


def code_version() -> str:
    """Commit under test, and whether files outside scripts/ differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = [line for line in git("status", "--porcelain").splitlines()
                   if not line[3:].startswith("scripts/")]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (f" + {len(changed)} uncommitted changes" if changed else "")


def describe_bound(opts: BenchOptions) -> str:
    parts = []
    if opts.duration is not None:
        parts.append(f"{opts.duration:g} s")
    if opts.requests is not None:
        parts.append(f"{opts.requests} requests")
    return " or ".join(parts)


def describe(opts: BenchOptions) -> str:
    """The lines above the table: what was measured, under which settings."""
    t = opts.trace

    def setting(value: int | None, unit: str = "") -> str:
        return "server default" if value is None else f"{value}{unit}"

    return "\n".join([
        f"- code: {code_version()}; machine: {os.cpu_count()} CPUs, python "
        f"{sys.version.split()[0]}",
        f"- slides: {opts.num_slides} x {opts.slide_size[0]}x{opts.slide_size[1]} "
        f"(cached in {opts.slides_dir})",
        f"- trace: seed {t.seed}, {opts.concurrency} viewers x {opts.inflight} in flight, "
        f"Zipf s={t.zipf_s}{', hot slide 50%' if t.hot else ''}, switch slide every "
        f"{t.switch_every} steps, viewer tile cache {t.client_cache}; "
        f"{describe_bound(opts)} per configuration",
        f"- caches: reader {setting(opts.reader_cache_size)} slides/worker, tiles "
        f"{setting(opts.tile_cache_bytes, ' B')}/worker, gateway hot tiles "
        f"{setting(opts.gateway_cache_bytes, ' B')}",
        *([f"- other settings: {', '.join(f'{k}={v}' for k, v in opts.settings)}"]
          if opts.settings else []),
    ])


def write_json(path: str, opts: BenchOptions, rows: Sequence[RunSummary]) -> None:
    doc: dict[str, Any] = {"options": asdict(opts), "runs": [asdict(r) for r in rows]}
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)


def _raise_interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Ctrl-C (even if our parent ignored SIGINT) and SIGTERM stop the servers, then exit."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def prepare_slides(opts: BenchOptions) -> tuple[SlideSet, dict[str, Geometry]]:
    """The slide set, and each slide's tile grid under the settings the server will load."""
    width, height = opts.slide_size
    slides = ensure_slides(opts.slides_dir, opts.num_slides, width, height, seed=opts.trace.seed)
    settings = load_settings(dict(opts.settings))
    return slides, {n: slide_geometry(os.path.join(slides.root, n), settings)
                    for n in slides.names}


@dataclass
class BenchOutcome:
    rows: list[RunSummary]
    failed: list[str]
    interrupted: bool = False


def run_all(opts: BenchOptions, log_dir: str) -> BenchOutcome:
    """Every configuration in turn; a failed one is reported and skipped, Ctrl-C stops."""
    outcome = BenchOutcome([], [])
    try:
        slides, geometries = prepare_slides(opts)
        for cfg in plan_configs(opts):
            try:
                outcome.rows.append(run_config(cfg, opts, slides, geometries, log_dir))
            except (ServerError, OSError) as exc:  # OSError: /stats unreachable
                log.error("%s failed: %s", cfg, exc)
                outcome.failed.append(str(cfg))
    except KeyboardInterrupt:
        outcome.interrupted = True
        log.warning("interrupted; no server left running; results so far below")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    opts = resolve_options(ns, parser)
    install_signal_handlers()
    started = time.monotonic()
    log_dir = tempfile.mkdtemp(prefix="tilerouter-bench-logs-")
    outcome = run_all(opts, log_dir)
    rows = outcome.rows
    print(f"\n## tilerouter bench ({time.monotonic() - started:.0f} s)\n")
    print(describe(opts) + "\n")
    print(markdown_table(rows))
    if opts.json_path:
        write_json(opts.json_path, opts, rows)
    if opts.keep_logs or outcome.failed or any(r.errors or r.extra["worker_deaths"]
                                               for r in rows):
        print(f"\nserver logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    if outcome.interrupted:
        return 130
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
