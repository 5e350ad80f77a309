#!/usr/bin/env python3
"""Routers named by DNS join and leave under load: how long until the gateway uses a router
that joined, or has dropped one that left, and what the viewers saw meanwhile.

Gateway and workers are given ``dns+tcp://routers.bench:PORT``, resolved from a hosts file
of this benchmark's own (benchlib/hosts_file.py: a private mount namespace, so root is
needed); routers listen on 127.0.0.2-4 at the same ports, as pods behind a Kubernetes
headless service. Each cycle one router joins (started, then its address added) and, ``--every``
seconds later, the oldest leaves (address removed and SIGTERM at once). Websocket viewers
keep requests in flight over many slide ids throughout. Also prints how many slides a join
or a leave moves when the rendezvous order is keyed on the endpoint (now) versus on its
index in the sorted address list (before). Prints tables; asserts nothing.

    sudo .venv/bin/python scripts/bench_router_dns.py [--cycles 3 --every 10 --interval 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchlib.hosts_file import HostsFile, unavailable_reason
from benchlib.procs import free_port
from benchlib.system import System, wait_for
from benchlib.viewers import Viewers, print_outcome, random_tiles

from readers.demo_slide import write_demo_slide
from wsgateway.router_pool import rendezvous_order

NAME = "routers.bench"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
AFTER = 5.0  # seconds after an event that count as its phase


def _routers(sysm: System) -> dict[str, bool]:
    """The gateway's routers: endpoint -> has workers."""
    return {r["endpoint"]: r["has_workers"] and r["available"]
            for r in sysm.stats()["gateway"]["routers"]}


def _old_order(key: str, count: int) -> list[int]:
    """The rendezvous order before: keyed on the router's index in the list."""
    def weight(i: int) -> bytes:
        return hashlib.blake2b(f"{i}\0{key}".encode(), digest_size=8).digest()
    return sorted(range(count), key=weight, reverse=True)


def shard_moves(slides: int = 10_000) -> list[tuple[str, float, float]]:
    """(event, share of slides moved keyed on endpoints, keyed on indexes)."""
    keys = [f"slide-{i}.svs" for i in range(slides)]
    three = ["tcp://10.0.0.1:5555", "tcp://10.0.0.3:5555", "tcp://10.0.0.4:5555"]
    four = sorted([*three, "tcp://10.0.0.2:5555"])

    def moved(before: list[str], after: list[str]) -> tuple[float, float]:
        new = sum(before[rendezvous_order(k, before)[0]] != after[rendezvous_order(k, after)[0]]
                  for k in keys)
        old = sum(before[_old_order(k, len(before))[0]] != after[_old_order(k, len(after))[0]]
                  for k in keys)
        return new / slides, old / slides

    return [("3 -> 4 routers (joins 2nd in address order)", *moved(three, four)),
            ("4 -> 3 routers (the 2nd leaves)", *moved(four, three))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="router_dns_interval")
    ap.add_argument("--heartbeat", default="1x3", help="interval x liveness")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    args = ap.parse_args()
    beat, liveness = args.heartbeat.split("x")
    reason = unavailable_reason()
    if reason:
        print(f"bench_router_dns: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-router-dns-") as tmp:
        first = Path(write_demo_slide(Path(tmp) / "s00.tiff", 4000, 3000, seed=1))
        for i in range(1, 24):  # many slide ids (one slide), sharded over the routers
            os.link(first, Path(tmp) / f"s{i:02d}.tiff")
        slides = [(f"s{i:02d}.tiff", 12) for i in range(24)]
        front, back = free_port(ADDRESSES[0]), free_port(ADDRESSES[0])
        sysm = System(tmp, workers=args.workers, frontend=f"dns+tcp://{NAME}:{front}",
                      backend=f"dns+tcp://{NAME}:{back}", router_dns_interval=args.interval,
                      heartbeat_interval=float(beat), heartbeat_liveness=int(liveness),
                      gateway_cache_bytes=0, stats_port=0, log_level="WARNING")
        hosts = HostsFile(Path(tmp), NAME)

        def start_router(address: str) -> None:
            sysm.spawn(f"router-{address}", "router.cli",
                       TILEROUTER_FRONTEND=f"tcp://{address}:{front}",
                       TILEROUTER_BACKEND=f"tcp://{address}:{back}")

        named, spare = ADDRESSES[:2], ADDRESSES[2:]
        events: list[tuple[str, str, float, float]] = []  # kind, address, at, settled in
        try:
            for address in named:
                start_router(address)
            hosts.set(*named)
            hosts.spawn(sysm, "workers", "workers.launcher")
            hosts.spawn(sysm, "gateway", "wsgateway.cli")
            wait_for(lambda: sum(_routers(sysm).values()) == 2, 60, 0.1, "two routers")
            viewers = Viewers([sysm.port], random_tiles(slides), args.clients, args.window)
            for t in viewers.threads:
                t.start()
            for _ in range(args.cycles):
                time.sleep(args.every)  # a phase of steady load
                address = spare.pop(0)
                start_router(address)
                at = time.monotonic()
                named.append(address)
                hosts.set(*named)
                wait_for(lambda a=address: _routers(sysm).get(f"tcp://{a}:{front}"), 60, 0.02)
                events.append(("join", address, at, time.monotonic() - at))
                time.sleep(args.every)
                address = named.pop(0)
                at = time.monotonic()
                hosts.set(*named)
                sysm.procs[f"router-{address}"].send_signal(signal.SIGTERM)
                wait_for(lambda a=address: f"tcp://{a}:{front}" not in _routers(sysm), 60, 0.02)
                events.append(("leave", address, at, time.monotonic() - at))
                sysm.stop_process(f"router-{address}")
                spare.append(address)
            time.sleep(args.every)
            viewers.stop.set()
            for t in viewers.threads:
                t.join(60)
            resent = sysm.stats()["gateway"]["resent"]
        finally:
            sysm.stop()

    def phase(at: float) -> str:
        for kind, _, when, _ in events:
            if 0 <= at - when < AFTER:
                return f"{AFTER:.0f} s after a {kind}"
        return "steady"

    print(f"{args.workers} workers, {args.clients} viewers x {args.window} in flight, "
          f"router_dns_interval {args.interval} s, heartbeat {args.heartbeat}, {args.cycles} "
          f"joins and {args.cycles} leaves, {args.every:.0f} s apart")
    print_outcome(viewers, phase, ["steady", f"{AFTER:.0f} s after a join",
                                   f"{AFTER:.0f} s after a leave"], resent)
    print("| event | router | gateway settled in (s) |")
    print("|---|---|--:|")
    for kind, address, _, took in events:
        print(f"| {kind} | {address} | {took:.2f} |")
    print("| slides moved (of 10,000) | keyed on endpoint | keyed on index (before) |")
    print("|---|--:|--:|")
    for event, new, old in shard_moves():
        print(f"| {event} | {new:.1%} | {old:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
