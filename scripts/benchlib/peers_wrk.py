"""Load runs for scripts/bench_peers.py: wrk over HTTP (scripts/peers/walk.lua walks a URL
list) or scripts/peers/wsdrive.py over the websocket, with the server's CPU summed over its
process tree and the CPU used by everyone else measured, so that a disturbed run is redone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cpu import machine_busy_seconds
from .peers_common import PEERS_DIR, BenchError, Tile, http_get, say
from .peers_servers import Peer, Processes, short_name
from .procs import ProcInfo, all_procs, cmdline

WS_WINDOW = 4  # requests in flight per websocket (a viewer keeps several)
OTHER_LIMIT = 0.2  # cores used by neither the server nor wrk before a run is redone


@dataclass
class Result:
    server: str
    geometry: str
    workload: str
    tiles_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_per_1000: float | None = None
    cores: float | None = None
    non2xx: int | None = None
    sock_errors: int | None = None
    repeats: int = 0
    note: str = ""
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def write_list(path: str, peer: Peer, tiles: Sequence[Tile]) -> str:
    with open(path, "w") as fh:
        fh.write("\n".join(peer.tile_path(t) for t in tiles) + "\n")
    return path


def wait_quiet(max_wait: float, threshold: float = 0.25) -> None:
    """Wait (up to max_wait s) until processes other than ours use < threshold cores."""
    deadline = time.monotonic() + max_wait
    waited = False
    while True:
        b0 = machine_busy_seconds()
        time.sleep(1.0)
        load = machine_busy_seconds() - b0
        if load < threshold:
            if waited:
                say(f"    machine quiet again ({load:.2f} cores busy)")
            return
        if time.monotonic() > deadline:
            say(f"    machine still busy ({load:.2f} cores) after {max_wait:.0f}s: measuring "
                "anyway (see OTHER LOAD in the notes)")
            return
        if not waited:
            say(f"    machine busy ({load:.2f} cores used by other processes); waiting")
            waited = True


def best_of_attempts(args: argparse.Namespace, run_once: Callable[[int], Result]) -> Result:
    """``run_once(attempt)``, redone (up to --attempts) while other processes loaded the
    machine; keeps the attempt with the least other load."""
    best: Result | None = None
    attempt = 0
    for attempt in range(1, args.attempts + 1):
        wait_quiet(args.quiet_wait)
        r = run_once(attempt)
        if best is None or r.raw["other_cores"] < best.raw["other_cores"]:
            best = r
        if r.raw["other_cores"] <= OTHER_LIMIT:
            break
        say(f"    other processes used {r.raw['other_cores']:.2f} cores during the run"
            + ("; running again" if attempt < args.attempts else ""))
    assert best is not None
    if best.raw["attempt"] > 1 or best.raw["other_cores"] > OTHER_LIMIT:
        best.note += f", attempt {best.raw['attempt']:.0f} of {attempt}"
    return best


def measure(ps: Processes, peer: Peer, listfile: str, workload: str,
            args: argparse.Namespace, rundir: str, websocket: bool = False) -> Result:
    """run_wrk via best_of_attempts; a distinct run goes on down the list, so no attempt
    sees a tile that another attempt fetched."""
    offset = 0

    def once(attempt: int) -> Result:
        nonlocal offset
        r = run_wrk(ps, peer, listfile, workload, args, rundir, offset, attempt, websocket)
        offset = int(r.raw["next"]) if workload == "distinct" else 0
        return r

    return best_of_attempts(args, once)


def _load_argv(peer: Peer, listfile: str, args: argparse.Namespace, offset: int,
               websocket: bool) -> list[str]:
    if websocket:
        return [sys.executable, os.path.join(PEERS_DIR, "wsdrive.py"), str(peer.port),
                listfile, "--procs", str(args.threads), "--conns",
                str(max(1, args.connections // args.threads)), "--window", str(WS_WINDOW),
                "--duration", f"{args.duration:g}", "--offset", str(offset)]
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
            f"{args.duration:g}s", "--timeout", "10s", "--latency", "-s",
            os.path.join(PEERS_DIR, "walk.lua"), peer.url("/"), "--", listfile,
            str(args.threads), str(offset)]
    return ["taskset", "-c", peer.client_cpus, *argv] if peer.client_cpus else argv


def run_wrk(ps: Processes, peer: Peer, listfile: str, workload: str, args: argparse.Namespace,
            rundir: str, offset: int = 0, attempt: int = 1, websocket: bool = False) -> Result:
    """One load run: wrk over HTTP, or (``websocket``) scripts/peers/wsdrive.py on /ws
    with the same connection count, ``WS_WINDOW`` requests in flight on each."""
    argv = _load_argv(peer, listfile, args, offset, websocket)
    tool = "wsdrive" if websocket else "wrk"
    roots = [p.pid for p in peer.procs]
    stats0 = _stats(peer)
    before = ps.observe(roots)
    everyone0 = all_procs()
    busy0, kids0 = machine_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60,
                         check=False)
    wall = time.monotonic() - t0
    after = ps.observe(roots)
    busy1, kids1 = machine_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    others = _others(everyone0, all_procs(), set(after) | {os.getpid()}, wall)
    tag = f"{peer.key.replace('/', '-')}-{workload}-{attempt}"
    with open(os.path.join(rundir, f"{tool}-{tag}.txt"), "w") as fh:
        fh.write(" ".join(argv) + "\n\n" + out.stdout + out.stderr)
    m = re.search(r"^BENCH (.*)$", out.stdout, re.M)
    if out.returncode != 0 or m is None:
        raise BenchError(f"{tool} failed ({out.returncode}): {out.stderr.strip()[:300]}")
    raw = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    raw.update(wall_s=wall, attempt=attempt, offset=offset)
    by_name: dict[str, float] = {}
    cpu_s = 0.0
    for pid, info in after.items():
        prev = before.get(pid)
        delta = info.cpu_s - (prev.cpu_s if prev is not None and prev.start == info.start
                              else 0.0)
        cpu_s += delta
        label = short_name(pid, info)
        by_name[label] = by_name.get(label, 0.0) + delta
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status"]
    sock = int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"])
    repeats = int(raw["repeats"]) if workload == "distinct" else 0
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    other = (busy1 - busy0) - cpu_s - wrk_cpu  # neither server nor wrk
    raw.update(server_cpu_s=cpu_s, wrk_cpu_s=wrk_cpu, other_cpu_s=other,
               other_cores=other / wall, others=others)
    notes = [f"LIST WRAPPED: {repeats} repeated tiles" if repeats else "",
             _router_notes(peer, stats0, raw), f"{tool} {wrk_cpu / wall:.2f} cores",
             f"OTHER LOAD {other / wall:.2f} cores ({others})" if other / wall > OTHER_LIMIT
             else ""]
    server = f"{peer.server} (websocket)" if websocket else peer.server
    return Result(server, peer.geometry.label, workload,
                  tiles_per_s=ok / seconds, p50_ms=raw["p50_us"] / 1000,
                  p99_ms=raw["p99_us"] / 1000,
                  cpu_per_1000=cpu_s / ok * 1000 if ok else None,
                  cores=cpu_s / seconds, non2xx=int(raw["status"]), sock_errors=sock,
                  repeats=repeats, note=", ".join(filter(None, notes)),
                  cpu_by_process={k: round(v / seconds, 2) for k, v in by_name.items()},
                  raw=raw)


def _router_notes(peer: Peer, stats0: dict[str, Any] | None, raw: dict[str, Any]) -> str:
    """tilerouter's own counters over the run (from /stats; "" for the other peers)."""
    stats1 = _stats(peer)
    if not (stats0 and stats1):
        return ""
    raw["stats"] = stats1
    d = {k: _dig(stats1, k) - _dig(stats0, k) for k in
         ("routing.requests", "routing.prefetches", "gateway.hot_hits")}
    raw["stats_delta"] = d
    return (f"router requests {d['routing.requests']:.0f}, prefetches "
            f"{d['routing.prefetches']:.0f}, gateway hot hits {d['gateway.hot_hits']:.0f}")


def _others(before: dict[int, ProcInfo], after: dict[int, ProcInfo], ours: set[int],
            wall: float) -> str:
    """The busiest processes that are neither the server nor the benchmark (cores)."""
    used: dict[str, float] = {}
    for pid, info in after.items():
        prev = before.get(pid)
        if pid in ours or prev is None or prev.start != info.start:
            continue
        if info.cpu_s > prev.cpu_s:
            name = (cmdline(pid) or info.name)[:60]
            used[name] = used.get(name, 0.0) + (info.cpu_s - prev.cpu_s) / wall
    top = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name}: {cores:.2f}" for name, cores in top if cores >= 0.02) or (
        "short-lived processes")


def _stats(peer: Peer) -> dict[str, Any] | None:
    if not peer.stats_path:
        return None
    status, body, _ = http_get(peer.url(peer.stats_path))
    try:
        return json.loads(body) if status == 200 else None
    except ValueError:
        return None


def _dig(obj: dict[str, Any], dotted: str) -> float:
    for part in dotted.split("."):
        obj = obj.get(part, {}) if isinstance(obj, dict) else {}
    return float(obj) if isinstance(obj, (int, float)) else 0.0
