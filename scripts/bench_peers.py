#!/usr/bin/env python3
"""Side-by-side peer benchmark: tilerouter vs OpenSlide's DeepZoom server vs IIPImage.

One run on 127.0.0.1, one server at a time, the same tiles for all of them:

* tilerouter (``tilerouter serve --workers 2``) at DeepZoom 254/1 and at 256/0 (stored-tile
  passthrough), gateway hot-tile cache on (the default);
* openslide-python 1.4.7's ``examples/deepzoom/deepzoom_multiserver.py``, run unmodified
  from the sdist (Flask's threaded development server) at 254/1 and 256/0, quality 75;
* IIPImage ``iipsrv.fcgi`` behind lighttpd + mod_fastcgi (2 iipsrv processes, quality 75),
  plain and with memcached; its DeepZoom is 256/0 only;
* OpenSlide itself in-process: 2 processes of ``DeepZoomGenerator.get_tile`` + Pillow JPEG
  q75 on the same distinct tiles (what the worker cores could render at best).
* "own-cores": the target's "what OpenSlide can render on the cores the workers use" taken
  literally: tilerouter 254/1 with its workers pinned to the upper half of the CPUs
  (``--worker-cpus``) and gateway, router and wrk on the lower half, against OpenSlide
  in-process pinned to the same upper half, next to the shared-core rows above.
  tilerouter's workers cut most 254/1 tiles from stored JPEG tiles themselves
  (readers/stored_levels.py: the same bytes as get_tile, less CPU), so these ratios
  compare serving tiles with OpenSlide's own way of rendering them, and can exceed 1.

Workloads, driven by wrk (``scripts/peers/walk.lua`` walks a URL list): "distinct" = every
tile of the highest --levels levels of every slide, shuffled with a fixed seed, never
repeated within a run; "repeated" = --hot tiles requested over and over. The server's CPU
is summed over its whole process tree from /proc. Prints one markdown table (with the
target ratios) and a few correctness checks; everything raw goes to WORKDIR/run/.

Installs what is missing (Debian iipimage-server, lighttpd, memcached, wrk; Flask in a
venv under WORKDIR; the openslide-python sdist) and generates the slides once. Every
server runs in its own process group and is stopped on exit, error, Ctrl-C or SIGTERM.

On a shared 2-core machine other processes skew everything: before each run the script
waits (--quiet-wait) for the machine to go quiet, measures the CPU used by neither the
server nor wrk, and redoes a run (--attempts) that others disturbed; notes say so.

    .venv/bin/python scripts/bench_peers.py [--duration 10] [--only tilerouter,iip]
    .venv/bin/python scripts/bench_peers.py --only tilerouter --tilerouter-extra "--prefetch false"
    .venv/bin/python scripts/bench_peers.py --install-only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchlib.peers_common import DZ, NATIVE, T0, BenchError, say, setup_logging
from benchlib.peers_inprocess import raw_render
from benchlib.peers_install import ensure_apt, ensure_flask_venv, ensure_multiserver
from benchlib.peers_report import markdown, print_report
from benchlib.peers_servers import (
    Peer,
    Processes,
    own_cores,
    start_iip,
    start_openslide,
    start_tilerouter,
    wait_ready,
)
from benchlib.peers_tiles import TileSet, check_peer, peer_slides, tile_set, warm_page_cache
from benchlib.peers_wrk import WS_WINDOW, Result, measure, write_list
from benchlib.procs import become_subreaper
from benchlib.server import REPO

CONFIGS = ("tilerouter-254/1", "openslide-254/1", "tilerouter-256/0", "openslide-256/0",
           "iip", "iip-memcached", "raw", "own-cores")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--slide-count", type=int, default=4)
    ap.add_argument("--slide-size", default="32768x24576", help="WIDTHxHEIGHT")
    ap.add_argument("--levels", type=int, default=4, help="highest DeepZoom levels in distinct")
    ap.add_argument("--hot", type=int, default=50, help="tiles in the repeated set")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", default="/tmp/bench-peers")
    ap.add_argument("--only", default="", help=f"comma-separated prefixes of {CONFIGS}")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="before each run, wait up to this long for other CPU load to stop")
    ap.add_argument("--attempts", type=int, default=3,
                    help="runs per measurement while other processes load the machine")
    ap.add_argument("--tilerouter-extra", default="",
                    help="extra 'tilerouter serve' flags, e.g. \"--prefetch false\"")
    ap.add_argument("--install-only", action="store_true", help="install and generate, stop")
    ap.add_argument("--json", help="also write the results here (default WORKDIR/run/...)")
    return ap.parse_args(argv)


def git_state() -> str:
    """The tilerouter code under test: commit, and how many files differ from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,
                              check=False).stdout.strip()
    dirty = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if line.strip()]
    return git("rev-parse", "--short", "HEAD") + (f" + {len(dirty)} modified files"
                                                    if dirty else "")


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _measure_peer(ps: Processes, peer: Peer, key: str, ts: TileSet,
                  args: argparse.Namespace, rundir: str) -> list[Result]:
    """The peer's wrk runs, and the websocket run for tilerouter (the viewer's own
    transport)."""
    out = []
    for workload, tiles in (("distinct", ts.distinct), ("repeated", ts.hot)):
        if workload not in peer.workloads:
            continue
        listfile = write_list(os.path.join(rundir, f"urls-{key.replace('/', '-')}-"
                                           f"{workload}.txt"), peer, tiles)
        say(f"  wrk {key} {workload} ({len(tiles)} URLs)")
        r = measure(ps, peer, listfile, workload, args, rundir)
        r.note = "; ".join(filter(None, [peer.note, r.note]))
        out.append(r)
        say(f"    {r.tiles_per_s:.0f} tiles/s p50 {r.p50_ms:.1f} ms "
            f"p99 {r.p99_ms:.1f} ms, {r.cores:.2f} cores {r.cpu_by_process}, "
            f"non-2xx {r.non2xx}")
    if peer.server == "tilerouter":
        listfile = os.path.join(rundir, f"ws-{key.replace('/', '-')}-repeated.txt")
        with open(listfile, "w") as fh:
            fh.write("".join(f"{t[0]} {t[1]} {t[2]} {t[3]}\n" for t in ts.hot))
        say(f"  websocket {key} repeated ({len(ts.hot)} tiles)")
        r = measure(ps, peer, listfile, "repeated", args, rundir, websocket=True)
        r.note = "; ".join(filter(None, [peer.note, r.note,
                                         f"{WS_WINDOW} in flight per websocket"]))
        out.append(r)
        say(f"    {r.tiles_per_s:.0f} tiles/s p50 {r.p50_ms:.1f} ms "
            f"p99 {r.p99_ms:.1f} ms, {r.cores:.2f} cores {r.cpu_by_process}")
    return out


def _render_rows(key: str, slides: dict[str, str], sets: dict[str, TileSet],
                 args: argparse.Namespace, failures: dict[str, str]) -> list[Result]:
    """OpenSlide in-process: "raw" on the shared cores, "own-cores" on the workers' CPUs."""
    if key == "raw":
        out = []
        for ts in sets.values():
            say(f"OpenSlide in-process render {ts.geometry.label}, {args.duration:g}s")
            out.append(raw_render(slides, ts, args))
            say(f"    {out[-1].tiles_per_s:.0f} tiles/s")
        return out
    split = own_cores()
    if split is None:
        failures[key] = "needs two CPUs: one for the workers, one for the rest"
        return []
    say(f"OpenSlide in-process render 254/1 pinned to CPUs {split[0]}")
    r = raw_render(slides, sets[DZ.label], args, cpus=[int(c) for c in split[0].split(",")])
    say(f"    {r.tiles_per_s:.0f} tiles/s")
    return [r]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # even if inherited ignored
        signal.signal(sig, _on_signal)
    become_subreaper()  # servers' orphaned children come to us to be reaped
    width, height = (int(v) for v in args.slide_size.lower().split("x"))
    selected = [c for c in CONFIGS
                if not args.only or any(c.startswith(o) for o in args.only.split(","))]
    os.makedirs(args.workdir, exist_ok=True)
    rundir = os.path.join(args.workdir, "run")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)

    code_at_start = git_state()
    say(f"tilerouter code: {code_at_start}")
    ensure_apt()
    script = ensure_multiserver(args.workdir)
    flask_python = ensure_flask_venv(args.workdir)
    slides = peer_slides(args.workdir, args.slide_count, width, height)
    slides_dir = os.path.dirname(next(iter(slides.values())))
    if args.install_only:
        return 0
    warm_page_cache(slides.values())

    sets = {g.label: tile_set(slides, g, args.levels, args.hot, args.seed) for g in (DZ, NATIVE)}
    for ts in sets.values():
        say(f"{ts.geometry.label}: {len(ts.distinct)} distinct tiles "
            f"(top {args.levels} levels of {len(slides)} slides), {len(ts.hot)} hot")

    ps = Processes(rundir)
    results: list[Result] = []
    checks: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    starters: dict[str, Callable[[], Peer]] = {
        "tilerouter-254/1": lambda: start_tilerouter(ps, slides_dir, DZ, args.tilerouter_extra),
        "openslide-254/1": lambda: start_openslide(ps, slides_dir, DZ, flask_python, script),
        "tilerouter-256/0": lambda: start_tilerouter(ps, slides_dir, NATIVE,
                                                     args.tilerouter_extra),
        "openslide-256/0": lambda: start_openslide(ps, slides_dir, NATIVE, flask_python,
                                                   script),
        "iip": lambda: start_iip(ps, slides_dir, rundir, memcached=False),
        "iip-memcached": lambda: start_iip(ps, slides_dir, rundir, memcached=True),
        "own-cores": lambda: start_tilerouter(ps, slides_dir, DZ, args.tilerouter_extra,
                                              own_cores()),
    }
    try:
        for key in selected:
            if key in ("raw", "own-cores"):
                results += _render_rows(key, slides, sets, args, failures)
                if key == "raw" or key in failures:
                    continue
            say(f"starting {key}")
            try:
                peer = starters[key]()
                wait_ready(peer, slides)
            except (BenchError, subprocess.CalledProcessError, OSError) as exc:
                failures[key] = str(exc)
                say(f"{key} could not run: {exc}")
                for proc in list(ps.running):
                    ps.stop(proc)
                continue
            ts = sets[peer.geometry.label]
            try:
                results += _measure_peer(ps, peer, key, ts, args, rundir)
                checks[f"{peer.server} {peer.geometry.label}"] = check_peer(peer, ts, slides)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                failures[key] = str(exc)
                say(f"{key} failed: {exc}")
            finally:
                for proc in peer.procs:
                    ps.stop(proc)
        if any(k.startswith("iip") for k in selected):
            results.append(Result("IIPImage", "254/1", "distinct", note=(
                "n/a: iipsrv 1.1 DeepZoom = the file's tile size, Overlap=\"0\" hard-coded")))
    finally:
        ps.stop_all()

    total = time.monotonic() - T0
    code_at_end = git_state()
    code = code_at_start if code_at_end == code_at_start else (
        f"{code_at_start} at start, {code_at_end} at end: THE CODE CHANGED DURING THE RUN")
    table = markdown(results)
    print_report(table, checks, failures, results,
                 f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s on the same "
                 f"{os.cpu_count()} cores; {len(slides)} slides {width}x{height}; total run "
                 f"time {total:.0f} s; tilerouter code {code}; raw output in {rundir}")
    out = args.json or os.path.join(rundir, "results.json")
    with open(out, "w") as fh:
        json.dump({"args": vars(args), "total_s": total, "code": code, "checks": checks,
                   "failures": failures, "results": [r.__dict__ for r in results],
                   "table": table}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}); servers stopped")
        raise SystemExit(130) from None
