#!/usr/bin/env python3
"""Soak and fault-recovery run: real router, workers and gateway under steady websocket load
while workers, the router and the gateway are killed, stopped and restarted on a schedule.

  .venv/bin/python scripts/soak.py                  # 180 s, 8 clients, 4 in flight each
  .venv/bin/python scripts/soak.py --quick          # 40 s
  .venv/bin/python scripts/soak.py --duration 600 --clients 16 --inflight 8

Every request id is tracked per client. A client reconnects with backoff when its
websocket drops and re-sends what was pending on the old connection (counted once).
After the load stops, outstanding requests get request_timeout + 10 s to be answered;
whatever is still unanswered then is **lost** (must be 0).

Faults (each logged with its time since the load started):
  kill-worker   SIGKILL a random worker (the launcher replaces it)
  stop-worker   SIGSTOP a worker for --stop-seconds, then SIGCONT
  kill-router   SIGKILL the router, restart it after --router-down seconds
  term-gateway  SIGTERM the gateway (it drains), restart it on the same port

Recovery per fault, measured three ways:
  clients   per client, from the fault to the first OK tile reply to a request *sent*
            after the fault; the max (and median) over clients
  probe     a fresh connection's first OK uncacheable request (a region never asked for
            before, so no cache can answer it) sent after the fault
  stats     from the fault to the system looking whole again in the router's own stats
            port (kill/stop: the victim dropped and 2 workers registered again; router:
            stats answering with every worker re-registered; gateway: /healthz answering
            with the router available)

RSS (VmRSS) of router, gateway, launcher and each worker is sampled every few seconds;
each process is compared between its baseline (after warm-up, or 10 s after it first
appeared when it was started during the run) and its last sample. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib.procs import child_pids, pid_alive  # noqa: E402
from benchlib.slides import ensure_slides, slide_geometry  # noqa: E402
from benchlib.soak_clients import Client  # noqa: E402
from benchlib.soak_faults import Injector, Sampler, make_schedule  # noqa: E402
from benchlib.soak_report import SoakRun, print_summary  # noqa: E402
from benchlib.system import System  # noqa: E402

MiB = 1024 * 1024
SLIDE_SEED = 100


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--quick", action="store_true", help="40 s run, one fault of each kind")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--inflight", type=int, default=4, help="requests in flight per client")
    ap.add_argument("--slides-dir", type=Path, default=Path("/tmp/tilerouter-soak-slides"))
    ap.add_argument("--slides", type=int, default=3)
    ap.add_argument("--slide-size", default="6000x4500")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument("--gateway-cache-mib", type=int, default=8)
    ap.add_argument("--tile-cache-mib", type=int, default=32,
                    help="per-worker tile cache (small, so workers keep rendering)")
    ap.add_argument("--stop-seconds", type=float, default=3.0)
    ap.add_argument("--router-down", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-logs", type=Path, default=None,
                    help="copy component logs here (default /tmp/tilerouter-soak-logs-<time>)")
    return ap.parse_args()


def run_load(args: argparse.Namespace, system: System, names: list[str], size: tuple[int, int],
             duration: float, warmup: float, logdir: Path, stop: threading.Event,
             started: list[Sampler]) -> SoakRun:
    """Clients, RSS sampler and fault injector for ``duration`` s, then until every client
    has its replies (or gave up); the sampler goes into ``started`` for the shutdown."""
    root = system.settings.slides
    geoms = {n: slide_geometry(os.path.join(root, n), system.settings) for n in names}
    print("slides: " + ", ".join(f"{n} ({g.max_level + 1} levels, top {g.tiles[-1]} tiles)"
                                 for n, g in geoms.items()), flush=True)
    overdue_after = args.request_timeout + 10
    t0 = time.monotonic()
    sampler = Sampler(system, t0)
    started.append(sampler)
    sampler.sample()
    sampler.start()
    clients = [Client(i, f"ws://127.0.0.1:{system.port}/ws", system.base, geoms,
                      args.inflight, overdue_after, t0, stop, seed=args.seed * 1000 + i)
               for i in range(args.clients)]
    for c in clients:
        c.start()
    schedule = make_schedule(duration, warmup)
    print(f"load: {args.clients} clients x {args.inflight} in flight for {duration:.0f}s; "
          f"warm-up {warmup:.0f}s; faults at "
          + ", ".join(f"{t:.0f}s {k}" for t, k in schedule), flush=True)
    injector = Injector(system, schedule, clients, t0, args, seed=args.seed,
                        probe_slide=names[0], probe_size=size)
    injector.start()

    last_report = 0.0
    while (elapsed := time.monotonic() - t0) < duration:
        time.sleep(min(1.0, duration - elapsed))
        if elapsed - last_report >= 20:
            last_report = elapsed
            n = sum(c.stats.replies for c in clients)
            ok = sum(c.stats.outcomes["ok"] for c in clients)
            print(f"  [{elapsed:7.2f}s] progress: {n} replies, {ok} ok, "
                  f"{sum(len(c.pending) for c in clients)} pending", flush=True)
    stop.set()
    load_end = time.monotonic()
    sampler.halt.set()
    sampler.join(5)
    sampler.sample()
    sampler.series_end = load_end - t0
    give_up = load_end + args.request_timeout + 10
    for c in clients:
        c.give_up_at = give_up
    for c in clients:
        c.join(max(0.0, give_up - time.monotonic()) + 5)
    drained = time.monotonic() - load_end
    injector.halt.set()
    injector.join(70)
    try:
        final_stats = system.stats()
    except Exception as exc:
        final_stats = {"error": repr(exc)}
    return SoakRun(args, duration, warmup, t0, clients, schedule, injector.faults, sampler,
                   drained, [c.idx for c in clients if c.is_alive()],
                   f"end RSS sampled at {load_end - t0:.0f}s (load stop)", final_stats, logdir)


def shut_down(system: System, sampler: Sampler | None, logdir: Path) -> list[str]:
    """SIGTERM gateway, workers and router; copy their logs (and rss.csv) to ``logdir``;
    returns what did not go cleanly."""
    notes = []
    component_pids = []
    if "workers" in system.procs:
        component_pids = list(child_pids(system.procs["workers"].pid))
    for name in ["gateway", "workers", "router"]:
        if name in system.procs:
            try:
                code = system.stop_process(name)
                if code != 0:
                    notes.append(f"{name} exited {code} on SIGTERM")
            except AssertionError as exc:
                notes.append(str(exc))
    leftovers = [p for p in component_pids if pid_alive(p)]
    if leftovers:
        notes.append(f"workers still alive after shutdown: {leftovers}")
    logdir.mkdir(parents=True, exist_ok=True)
    for log in system.rundir.glob("*.log"):
        shutil.copy(log, logdir / log.name)
    if sampler is not None:
        with open(logdir / "rss.csv", "w") as out:
            out.write("t_s,pid,role,vmrss_kib\n")
            for pid, series in sampler.series.items():
                for t, kib in series:
                    out.write(f"{t:.1f},{pid},{sampler.roles[pid]},{kib}\n")
    system.stop()
    return notes


def main() -> int:
    args = parse_args()
    duration = 40.0 if args.quick else args.duration
    warmup = min(15.0, duration * 0.15)
    w, h = (int(v) for v in args.slide_size.split("x"))
    progress = logging.StreamHandler(sys.stdout)  # slide generation
    progress.setFormatter(logging.Formatter("  %(message)s"))
    logging.getLogger("benchlib").addHandler(progress)
    logging.getLogger("benchlib").setLevel(logging.INFO)

    print(f"slides under {args.slides_dir}", flush=True)
    slides = ensure_slides(str(args.slides_dir), args.slides, w, h, seed=SLIDE_SEED)
    system = System(Path(slides.root), workers=2, heartbeat_interval=0.5,
                    heartbeat_liveness=3, request_timeout=args.request_timeout,
                    gateway_cache_bytes=args.gateway_cache_mib * MiB,
                    tile_cache_bytes=args.tile_cache_mib * MiB, log_level="INFO")
    logdir = args.keep_logs or Path(f"/tmp/tilerouter-soak-logs-{time.strftime('%H%M%S')}")
    print(f"starting system in {system.rundir} (gateway port {system.port}, router stats port "
          f"{system.settings.stats_port})", flush=True)
    system.start()
    stop = threading.Event()
    started: list[Sampler] = []
    try:
        run = run_load(args, system, list(slides.names), (w, h), duration, warmup, logdir,
                       stop, started)
    finally:
        stop.set()
        shutdown_notes = shut_down(system, started[0] if started else None, logdir)
    run.shutdown_notes = shutdown_notes
    print_summary(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
