#!/usr/bin/env python3
"""Remote-store benchmark (issue 14): tilerouter reading slides from S3 and a web server
through a latency proxy, against local disk and against OpenSlide's DeepZoom server on a
FUSE mount of the same bucket.

Everything runs on 127.0.0.1: moto S3 (behind a keep-alive nginx, as S3 keeps
connections open) and nginx serving the slide folder with an index.json, each behind one
TcpProxy per RTT (handshake delay on: a new connection costs a round trip). Sections:

  1. the slide set (generic TIFF and Aperio SVS, generated once and reused)
  3. the viewer trace (bench.py's: seeded Zipf pan/zoom sessions, two viewers per slide)
     per store, RTT, policy and worker count: throughput, latency, opens and remote
     traffic, and cache-aware / round-robin (goal: >= 2x at the highest RTT)
  4. first tile of a never-opened slide (goal: p50 <= 10 RTT + render time)
  5. a tile not cached on an open slide (goal: p50 <= 1 RTT + 5 ms)
  6. the same trace and probes on local disk, for reference
  7. the peer: OpenSlide's DeepZoom server on an s3fs mount through the same proxy
     (skipped, saying why, when FUSE does not work here)

Prints markdown tables and goal lines computed from the measurements; never asserts
anything about timing. Every server it starts is stopped on exit, error or Ctrl-C.

  .venv/bin/python scripts/bench_remote.py            # everything, about 12-15 min
  .venv/bin/python scripts/bench_remote.py --quick    # RTT 0 and 20, 2 workers, ~4 min
  .venv/bin/python scripts/bench_remote.py --only probe --rtts 20 --stores s3
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from benchlib.args import csv_list, parse_choices, parse_settings, parse_size, positive_int
from benchlib.remote_measure import (
    ProbeRow,
    Target,
    TraceRow,
    TraceSetup,
    run_probe,
    run_trace_row,
)
from benchlib.remote_peer import PeerRow, PeerTools, measure_peer, prepare
from benchlib.remote_report import (
    PROBE_LEGEND,
    TRACE_LEGEND,
    first_tile_table,
    peer_table,
    ratio_table,
    trace_table,
    warm_tile_table,
)
from benchlib.remote_slides import ensure_mixed_slides, geometries, total_bytes
from benchlib.remote_stores import KINDS, BenchStores
from benchlib.server import REPO, ServerError
from benchlib.store_host import ChildError
from benchlib.trace import TraceSpec

from config.settings import POLICIES, load_settings

log = logging.getLogger("bench_remote")
T = TypeVar("T")

SECTIONS = ("trace", "probe", "local", "peer")


@dataclasses.dataclass
class Results:
    trace: list[TraceRow] = dataclasses.field(default_factory=list)
    probes: list[ProbeRow] = dataclasses.field(default_factory=list)
    http: list[TraceRow] = dataclasses.field(default_factory=list)  # tilerouter vs the peer
    peers: list[PeerRow] = dataclasses.field(default_factory=list)
    peer_skipped: str = ""
    failed: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--stores", default="s3,http", help="remote stores: s3, http")
    p.add_argument("--rtts", default=None, help="round trips in ms (default 0,5,20; "
                   "--quick 0,20); goals are judged at the highest")
    p.add_argument("--policies", default="cache-aware,round-robin")
    p.add_argument("--workers", default=None, help="worker counts (default 2,4; --quick 2)")
    p.add_argument("--reader-cache-size", type=positive_int, default=8,
                   help="open slides per worker in the trace rows")
    p.add_argument("--tile-cache-bytes", type=lambda s: int(float(s)), default=8_000_000,
                   help="tile cache per worker (small, as bench.py's policy comparison)")
    p.add_argument("--num-slides", type=positive_int, default=24)
    p.add_argument("--slide-size", type=parse_size, default=(6000, 4500), help="WxH")
    p.add_argument("--svs-every", type=int, default=3, help="every Nth slide is Aperio SVS")
    p.add_argument("--slides-dir", default="/tmp/tilerouter-bench-remote-slides")
    p.add_argument("--viewers", type=positive_int, default=None,
                   help="virtual viewers (default two per slide)")
    p.add_argument("--inflight", type=positive_int, default=4, help="requests per viewer")
    p.add_argument("--transport", choices=("ws", "http"), default="ws")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load per trace row (default 12; --quick 5)")
    p.add_argument("--probe-slides", type=positive_int, default=None,
                   help="never-opened slides per first-tile probe (default 20; --quick 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"sections to run, from {','.join(SECTIONS)}")
    p.add_argument("--peer-workdir", default="/tmp/bench-peers",
                   help="where the DeepZoom server and its Flask venv are kept (shared "
                        "with bench_peers.py)")
    p.add_argument("--quick", action="store_true", help="smoke test, a few minutes")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar="NAME=VALUE", help="any other server setting (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@dataclasses.dataclass(frozen=True)
class Plan:
    stores: tuple[str, ...]
    rtts: tuple[float, ...]
    policies: tuple[str, ...]
    workers: tuple[int, ...]
    sections: tuple[str, ...]
    probe_slides: int


def make_plan(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    try:
        stores = parse_choices(ns.stores, KINDS, "--stores")
        policies = parse_choices(ns.policies, POLICIES, "--policies")
        sections = parse_choices(ns.only, SECTIONS, "--only")
        rtts = tuple(float(x) for x in csv_list(ns.rtts or ("0,20" if ns.quick else "0,5,20")))
        workers = tuple(int(x) for x in csv_list(ns.workers or ("2" if ns.quick else "2,4")))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    if not rtts or min(rtts) < 0 or not workers or min(workers) < 1:
        parser.error("--rtts must be >= 0 and --workers >= 1")
    return Plan(stores, rtts, policies, workers, sections,
                ns.probe_slides or (8 if ns.quick else 20))


def code_version() -> str:
    """Commit under test, and how many files outside scripts/ differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()
    changed = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not ln[3:].startswith("scripts/")]
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (
        f" + {len(changed)} uncommitted changes outside scripts/" if changed else "")


def targets(stores: BenchStores | None, kind: str, rtts: Sequence[float]) -> list[Target]:
    if stores is None:
        return []
    return [Target(kind, rtt, stores.slides_url(kind, rtt), stores.settings(kind, rtt),
                   _conn_counter(stores, kind, rtt)) for rtt in rtts]


def _conn_counter(stores: BenchStores, kind: str, rtt: float) -> Callable[[], int]:
    return lambda: int(stores.proxy_stats(kind)[f"{rtt:g}"]["connections"])


def _attempt(results: Results, what: str, fn: Callable[..., T], *args: object) -> T | None:
    """``fn(*args)``, or None with the failure noted (a failed row never stops the run)."""
    log.info("%s", what)
    try:
        return fn(*args)
    except (ServerError, ChildError, OSError, RuntimeError) as exc:
        log.error("%s failed: %s", what, str(exc).splitlines()[0] if str(exc) else exc)
        results.failed.append(f"{what}: {str(exc).splitlines()[0] if str(exc) else exc}")
        return None


def run_rows(setup: TraceSetup, plan: Plan, target: Target, results: Results) -> None:
    """Probe (if asked), then every policy x workers trace row on ``target``."""
    if "probe" in plan.sections:
        row = _attempt(results, f"probe {target.label}", run_probe, setup, target,
                       plan.probe_slides)
        if row is not None:
            results.probes.append(row)
    if "trace" in plan.sections:
        for workers in plan.workers:
            for policy in plan.policies:
                row = _attempt(results, f"trace {target.label} {policy} w{workers}",
                               run_trace_row, setup, target, policy, workers)
                if row is not None:
                    results.trace.append(row)
                    s = row.summary
                    log.info("  %.0f tiles/s p50 %.1f ms p99 %.1f ms, %d round trips, "
                             "errors %s", s.tiles_per_s, s.p50_ms, s.p99_ms,
                             row.remote.round_trips, s.errors or 0)


def run_peer(setup: TraceSetup, plan: Plan, stores: BenchStores, workdir: str,
             results: Results) -> None:
    tools: PeerTools = prepare(workdir)
    if tools.skipped:
        results.peer_skipped = tools.skipped
        log.warning("peer skipped: %s", tools.skipped)
        return
    http_setup = dataclasses.replace(setup, transport="http")
    for target in targets(stores, "s3", plan.rtts):
        row = _attempt(results, f"tilerouter over HTTP {target.label} (for the peer)",
                       run_trace_row, http_setup, target, "cache-aware", min(plan.workers))
        if row is not None:
            results.http.append(row)
        log.info("peer: OpenSlide DeepZoom server on s3fs at %s", target.label)
        peer = measure_peer(setup, stores, tools, float(target.rtt_ms or 0.0),
                            plan.probe_slides)
        if peer.error:
            log.error("peer at %s: %s", target.label, peer.error)
        results.peers.append(peer)


def make_setup(ns: argparse.Namespace, log_dir: str) -> TraceSetup:
    """The slide set (generated if missing) and the trace every row replays."""
    width, height = ns.slide_size
    slides = ensure_mixed_slides(ns.slides_dir, ns.num_slides, width, height, ns.seed,
                                 ns.svs_every)
    return TraceSetup(
        slides=slides, geometries=geometries(slides, load_settings(dict(ns.settings))),
        trace=TraceSpec(seed=ns.seed), viewers=ns.viewers or 2 * ns.num_slides,
        inflight=ns.inflight, duration=ns.duration or (5.0 if ns.quick else 12.0),
        transport=ns.transport, reader_cache_size=ns.reader_cache_size,
        tile_cache_bytes=ns.tile_cache_bytes, log_dir=log_dir, extra=tuple(ns.settings))


def run_all(ns: argparse.Namespace, plan: Plan, log_dir: str
            ) -> tuple[Results, TraceSetup | None, str]:
    results = Results()
    setup, uploaded = None, ""
    try:
        setup = make_setup(ns, log_dir)
        os.environ.update(BenchStores.credentials())
        if "local" in plan.sections:
            run_rows(setup, plan, Target("local", None, setup.slides.root), results)
        rows = {"trace", "probe"} & set(plan.sections)
        if rows or "peer" in plan.sections:
            kinds = plan.stores if rows else ("s3",)
            log.info("starting stores %s with proxies at %s ms", ",".join(kinds),
                     ",".join(f"{r:g}" for r in plan.rtts))
            with BenchStores(setup.slides, plan.rtts, log_dir, kinds) as stores:
                uploaded = stores.uploaded
                for kind in kinds if rows else ():
                    for target in targets(stores, kind, plan.rtts):
                        run_rows(setup, plan, target, results)
                if "peer" in plan.sections and "s3" in kinds:
                    run_peer(setup, plan, stores, ns.peer_workdir, results)
    except KeyboardInterrupt:
        results.interrupted = True
        log.warning("interrupted; every server stopped; results so far below")
    return results, setup, uploaded


def header(ns: argparse.Namespace, plan: Plan, setup: TraceSetup | None, uploaded: str,
           results: Results, started: float, code: str) -> str:
    others = [r.other_cores for r in results.trace + results.http if r.other_cores is not None]
    size = (f"{total_bytes(setup.slides) / 1e6:.0f} MB in {setup.slides.root}"
            if setup else "not generated")
    svs = sum(n.endswith(".svs") for n in setup.slides.names) if setup else 0
    return "\n".join([
        f"- machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, tilerouter "
        f"{code}; whole run {time.monotonic() - started:.0f} s; other programs "
        f"used {sum(others) / len(others) if others else float('nan'):.2f} cores on "
        "average during the trace rows (from /proc)",
        f"- slides: {ns.num_slides} x {ns.slide_size[0]}x{ns.slide_size[1]} "
        f"({ns.num_slides - svs} generic TIFF, {svs} Aperio SVS), {size}"
        + (f"; S3 holds {uploaded}" if uploaded else ""),
        f"- stores: {', '.join(plan.stores)} behind a TCP proxy adding "
        f"{', '.join(f'{r:g}' for r in plan.rtts)} ms RTT (half each way, plus one RTT "
        "per new connection); S3 = moto behind a keep-alive nginx, http = nginx + "
        "index.json; all on 127.0.0.1",
        f"- trace rows: {setup.viewers if setup else '?'} viewers (two per slide) x "
        f"{ns.inflight} in flight over {ns.transport}, seed {ns.seed}, Zipf slide "
        f"popularity, {setup.duration if setup else '?'} s per row; reader cache "
        f"{ns.reader_cache_size} slides/worker (the {ns.num_slides} slides do not fit in "
        f"one worker), tile cache {ns.tile_cache_bytes / 1e6:g} MB/worker, gateway hot-tile "
        "cache off, prefetch on; every other setting default"
        + (f"; --set {' '.join(f'{k}={v}' for k, v in ns.settings)}" if ns.settings else ""),
    ])


def print_report(ns: argparse.Namespace, plan: Plan, setup: TraceSetup | None,
                 uploaded: str, results: Results, started: float, code: str) -> None:
    out = ["\n## tilerouter remote-store benchmark\n", header(ns, plan, setup, uploaded,
                                                               results, started, code)]
    remote = [r for r in results.trace if r.target.rtt_ms is not None]
    local = [r for r in results.trace if r.target.rtt_ms is None]
    top = max(plan.rtts)
    if remote:
        out += ["\n### Viewer trace on remote stores\n", f"Columns: {TRACE_LEGEND}.\n",
                trace_table(remote), "\n### cache-aware / round-robin\n",
                ratio_table([*remote, *local], top)]
    if local:
        out += ["\n### Local disk (reference, same trace)\n", trace_table(local)]
    if results.probes:
        out += ["\n### First tile of a never-opened slide\n", f"Method: {PROBE_LEGEND}.\n",
                first_tile_table(results.probes, results.peers),
                "\n### Tile not cached, slide open (warm)\n",
                warm_tile_table(results.probes, results.peers)]
    if "peer" in plan.sections:
        out.append("\n### Peer: OpenSlide's DeepZoom server on an s3fs-fuse mount\n")
        if results.peer_skipped:
            out.append(f"skipped: {results.peer_skipped}")
        else:
            out += ["Same trace over HTTP (werkzeug closes each connection; the client "
                    "reconnects on loopback), same bucket through the same proxy; "
                    "deepzoom_multiserver.py of openslide-python 1.4.7 unmodified (1 "
                    "process, threaded, slide cache 10, quality 75) on s3fs defaults (no "
                    "disk cache); tilerouter over HTTP with the trace rows' settings; first "
                    "and warm tiles as above (peer: no /stats, so no round trips); new "
                    "conns: connections the proxy accepted during the trace; cores: "
                    "server (the peer: DeepZoom server + s3fs) / stores.\n",
                    peer_table(results.peers, results.http, results.probes)]
    if results.failed:
        out += ["\n### Failed\n", *(f"- {f}" for f in results.failed)]
    print("\n".join(out), flush=True)


def _raise_interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    plan = make_plan(ns, parser)
    ns.settings = parse_settings(ns.settings, parser)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    code_at_start = code_version()  # servers start from the work tree: note any change
    log_dir = tempfile.mkdtemp(prefix="tilerouter-bench-remote-")
    results, setup, uploaded = run_all(ns, plan, log_dir)
    code_at_end = code_version()
    code = code_at_start if code_at_end == code_at_start else (
        f"{code_at_start} at start, {code_at_end} at the end: THE CODE CHANGED DURING THE RUN")
    print_report(ns, plan, setup, uploaded, results, started, code)
    if ns.keep_logs or results.failed or any(r.summary.errors for r in results.trace):
        print(f"\nlogs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    if results.interrupted:
        return 130
    return 1 if results.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
