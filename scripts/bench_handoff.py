#!/usr/bin/env python3
"""Gateway hand-off: what websocket viewers see when one of two gateways on a port stops.

  .venv/bin/python scripts/bench_handoff.py                 # 16 viewers x 4 in flight
  .venv/bin/python scripts/bench_handoff.py --viewers 32 --inflight 8
  .venv/bin/python scripts/bench_handoff.py --server-tree /tmp/old   # another checkout's
                                                                     # router/workers/gateways

Router, worker launcher and two gateways sharing the port (SO_REUSEPORT) run as real
processes; viewers (scripts/benchlib/soak_clients.py, which follow the reconnect notice
as the viewer page does) walk the slides with ``--inflight`` tile requests outstanding.
After ``--warmup`` s the gateway holding most viewers gets SIGTERM; once it has exited it
is started again (as the serve launcher or systemd would), and the load goes on for
``--after`` s. Every request id is tracked. Printed: requests, replies, errors, duplicate
and unknown replies, lost requests; the outage (per viewer, the longest gap between two
good replies from 1 s before the SIGTERM to ``--after`` s after it: max and p99 over the
viewers that were on the stopped gateway, and the same gap in a calm window before, for
scale: on a loaded machine it is not 0); the hand-off itself (from the notice to the first
good reply to a request sent after it, per viewer that got the notice); p50/p99 latency
(first send to reply) of requests sent in the ``--after`` s after the SIGTERM and in as
long a window before it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib.metrics import percentile  # noqa: E402
from benchlib.slides import ensure_slides, slide_geometry  # noqa: E402
from benchlib.soak_clients import Client  # noqa: E402
from benchlib.system import System, wait_for  # noqa: E402

MiB = 1024 * 1024
SLIDE_SEED = 100
PRE = 1.0  # the outage window starts this long before the SIGTERM


class QuietClient(Client):
    """A soak client that does not print its per-event log lines."""

    def log(self, what: str) -> None:
        pass


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--viewers", type=int, default=16)
    ap.add_argument("--inflight", type=int, default=4, help="requests in flight per viewer")
    ap.add_argument("--warmup", type=float, default=6.0, help="seconds before the SIGTERM")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of load after it")
    ap.add_argument("--drain-timeout", type=float, default=5.0)
    ap.add_argument("--slides-dir", type=Path, default=Path("/tmp/tilerouter-soak-slides"))
    ap.add_argument("--slides", type=int, default=3)
    ap.add_argument("--slide-size", default="6000x4500")
    ap.add_argument("--gateway-cache-mib", type=int, default=8)
    ap.add_argument("--server-tree", type=Path, default=None,
                    help="run the components from this checkout (a before figure)")
    return ap.parse_args()


def longest_gap(client: Client, start: float, end: float) -> float:
    """The longest stretch of [start, end] without a good reply (edges count as gaps)."""
    inside = [t for t, _ in client.ok_log if start <= t <= end]
    points = [start, *inside, end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def server_pid(port: int, client: Client) -> int | None:
    """The pid holding the server end of ``client``'s connection (/proc/net/tcp, fds)."""
    sock = client.sock
    if sock is None:
        return None
    local = sock.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if (int(f[1].rsplit(":", 1)[1], 16) == port
                    and int(f[2].rsplit(":", 1)[1], 16) == local and f[9] != "0"):
                inodes.add(f"socket:[{f[9]}]")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (pid_dir / "fd").iterdir()):
                return int(pid_dir.name)
        except OSError:
            continue
    return None


def main() -> int:
    args = parse_args()
    w, h = (int(v) for v in args.slide_size.split("x"))
    slides = ensure_slides(str(args.slides_dir), args.slides, w, h, seed=SLIDE_SEED)
    system = System(Path(slides.root), workers=2, gateways=2, heartbeat_interval=0.5,
                    heartbeat_liveness=3, request_timeout=10.0,
                    drain_timeout=args.drain_timeout,
                    gateway_cache_bytes=args.gateway_cache_mib * MiB, log_level="INFO")
    if args.server_tree is not None:
        system.cwd = args.server_tree.resolve()
    print(f"components from {system.cwd}; gateway port {system.port}; logs in {system.rundir}",
          flush=True)
    stop = threading.Event()
    clients: list[Client] = []
    try:
        system.start()
        system.spawn("gateway-2", "wsgateway.cli")
        wait_for(lambda: b"gateway listening" in (system.rundir / "gateway-2.log").read_bytes(),
                 30, what="second gateway listening")
        geoms = {n: slide_geometry(os.path.join(slides.root, n), system.settings)
                 for n in slides.names}
        t0 = time.monotonic()
        clients = [QuietClient(i, f"ws://127.0.0.1:{system.port}/ws", system.base, geoms,
                               args.inflight, 20.0, t0, stop, seed=1000 + i)
                   for i in range(args.viewers)]
        for c in clients:
            c.start()
        wait_for(lambda: all(c.sock is not None for c in clients), 30, what="viewers connected")
        time.sleep(args.warmup)  # the load runs: this is the benchmark's warm-up, not a sync
        pids = {"gateway": system.procs["gateway"].pid, "gateway-2": system.procs["gateway-2"].pid}
        on = Counter(server_pid(system.port, c) for c in clients)
        victim = max(pids, key=lambda n: on[pids[n]])
        moved = [c for c in clients if server_pid(system.port, c) == pids[victim]]
        proc = system.procs[victim]
        t_sig = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(args.drain_timeout + 15)
        exited = time.monotonic() - t_sig
        system.spawn(victim, "wsgateway.cli")  # as the launcher would
        time.sleep(max(0.0, t_sig + args.after - time.monotonic()))  # load goes on
        stop.set()
        give_up = time.monotonic() + 20
        for c in clients:
            c.give_up_at = give_up
        for c in clients:
            c.join(max(0.0, give_up - time.monotonic()) + 5)
        notes = [line for line in (system.rundir / f"{victim}.log").read_text().splitlines()
                 if "hand" in line or "gateway stopped" in line][:3]
    finally:
        stop.set()
        system.stop()

    sent = sum(c.stats.sent for c in clients)
    outcomes: Counter[str] = Counter()
    for c in clients:
        outcomes.update(c.stats.outcomes)
    replies = sum(c.stats.replies for c in clients)
    errors = replies - outcomes["ok"]
    lost = sum(len(c.pending) for c in clients)
    print(f"\n{args.viewers} viewers x {args.inflight} in flight; SIGTERM {victim} "
          f"(pid {pids[victim]}, {len(moved)} viewers on it); it exited {code} after "
          f"{exited:.2f} s and was started again")
    print("\n".join(f"  {line}" for line in notes))
    print(f"requests {sent}, replies {replies}, ok {outcomes['ok']}, errors {errors}"
          + (f" {dict(o for o in outcomes.items() if o[0] != 'ok')}" if errors else "")
          + f", duplicates {sum(c.stats.duplicates for c in clients)}, unknown ids "
          f"{sum(c.stats.unknown_ids for c in clients)}, lost {lost}")
    print(f"hand-offs {sum(c.stats.handoffs for c in clients)}, re-sent "
          f"{sum(c.stats.resent for c in clients)}, disconnects "
          f"{sum(len(c.stats.disconnects) for c in clients)}, failed connects "
          f"{sum(c.stats.connect_failures for c in clients)}")
    window = (t_sig - PRE, t_sig + args.after)
    before = (t_sig - PRE - (window[1] - window[0]), t_sig - PRE)
    for label, group in (("viewers on the stopped gateway", moved), ("all viewers", clients)):
        gaps = sorted(longest_gap(c, *window) * 1000 for c in group)
        calm = [longest_gap(c, *before) * 1000 for c in group]
        print(f"outage, {label} ({len(group)}): longest gap between good replies max "
              f"{max(gaps, default=float('nan')):.0f} ms, p99 {percentile(gaps, 99):.0f} ms "
              f"(same window before the SIGTERM: max {max(calm, default=float('nan')):.0f} ms)")
    took = [(c.first_ok_sent_after(c.handoff_at[0]) - c.handoff_at[0]) * 1000
            for c in clients if c.handoff_at and c.first_ok_sent_after(c.handoff_at[0])]
    if took:
        print(f"hand-off, notice to first good reply on the new connection ({len(took)} "
              f"viewers): p50 {percentile(sorted(took), 50):.0f} ms, max {max(took):.0f} ms")
    for label, (lo, hi) in (("after the SIGTERM", (t_sig, t_sig + args.after)),
                            ("before it", (t_sig - args.after, t_sig))):
        lat = sorted((d.at - d.first_sent) * 1000 for c in clients for d in c.done.values()
                     if lo <= d.first_sent < hi)
        print(f"latency of requests sent {args.after:.0f} s {label}: n {len(lat)}, "
              f"p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms")
    print("(the machine may have been shared with other work while this ran)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
