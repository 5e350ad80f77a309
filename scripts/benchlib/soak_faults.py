"""The soak's faults and what it watches: workers, the router and the gateway killed,
stopped and restarted on a schedule, each fault's recovery measured three ways (router
stats, a fresh probe connection, every client), and the components' RSS sampled."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import struct
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from .procs import child_pids, pid_alive
from .soak_clients import Client
from .system import System


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """VmRSS of every component process every ``interval`` seconds: {pid: [(t, kib)]}."""

    def __init__(self, system: System, t0: float, interval: float = 2.0) -> None:
        super().__init__(name="rss", daemon=True)
        self.system, self.t0, self.interval = system, t0, interval
        self.series: dict[int, list[tuple[float, int]]] = {}
        self.roles: dict[int, str] = {}
        self.halt = threading.Event()
        self.series_end = 0.0  # when the load stopped (s since t0)

    def component_pids(self) -> dict[int, str]:
        out = {}
        for name, proc in list(self.system.procs.items()):
            if proc.poll() is None:
                out[proc.pid] = name if name != "workers" else "launcher"
                if name == "workers":
                    for c in child_pids(proc.pid):
                        out[c] = "worker"
        return out

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        for pid, role in self.component_pids().items():
            kib = rss_kib(pid)
            if kib is not None:
                self.roles.setdefault(pid, role)
                self.series.setdefault(pid, []).append((now, kib))

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()


@dataclass
class Fault:
    kind: str
    at: float  # seconds since load start
    detail: str = ""
    stats_detected: float | None = None  # victim dropped from the router's stats
    stats_recovered: float | None = None
    probe: float | None = None  # first OK uncacheable request sent after the fault
    probe_failures: dict[str, int] = field(default_factory=dict)
    clients: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Probe(threading.Thread):
    """After a fault: a fresh connection sends uncacheable work (a ``region`` of a
    never-used rectangle, so neither the gateway's hot cache nor a worker's tile cache can
    answer it) until one is answered OK: end-to-end service through router and worker."""

    def __init__(self, url: str, origin: str, slide: str, size: tuple[int, int],
                 t0: float, rng: random.Random, limit: float, per_request: float) -> None:
        super().__init__(name="probe", daemon=True)
        self.url, self.origin, self.slide, self.size = url, origin, slide, size
        self.t0, self.rng, self.limit, self.per_request = t0, rng, limit, per_request
        self.ok_at: float | None = None  # s since t0
        self.failures: Counter[str] = Counter()
        self.start_at = time.monotonic()

    def run(self) -> None:
        deadline = self.start_at + self.limit
        sock = None
        n = 0
        while time.monotonic() < deadline:
            try:
                if sock is None:
                    sock = websocket.create_connection(self.url, timeout=self.per_request,
                                                       origin=self.origin)
                n += 1
                sock.send(json.dumps({
                    "id": f"probe-{n}", "op": "region", "slide": self.slide,
                    "x": self.rng.randrange(self.size[0] - 200),
                    "y": self.rng.randrange(self.size[1] - 200),
                    "w": 97 + self.rng.randrange(100), "h": 97, "out_w": 32, "out_h": 32}))
                while True:
                    opcode, data = sock.recv_data()
                    if opcode == websocket.ABNF.OPCODE_BINARY:
                        (k,) = struct.unpack(">I", data[:4])
                        header = json.loads(data[4:4 + k])
                    else:
                        header = json.loads(data)
                    if header.get("id") == f"probe-{n}":
                        break
                if header.get("ok"):
                    self.ok_at = time.monotonic() - self.t0
                    break
                self.failures[str(header.get("error", {}).get("code"))] += 1
            except Exception as exc:
                self.failures[type(exc).__name__] += 1
                if sock is not None:
                    with contextlib.suppress(Exception):
                        sock.close()
                sock = None
            time.sleep(0.05)
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()


class Injector(threading.Thread):
    def __init__(self, system: System, schedule: list[tuple[float, str]], clients: list[Client],
                 t0: float, args: argparse.Namespace, seed: int, probe_slide: str,
                 probe_size: tuple[int, int]) -> None:
        super().__init__(name="faults", daemon=True)
        self.system, self.schedule, self.clients = system, schedule, clients
        self.t0, self.args, self.rng = t0, args, random.Random(seed)
        self.faults: list[Fault] = []
        self.halt = threading.Event()
        self.expected = system.settings.worker_count
        self.probe_slide, self.probe_size = probe_slide, probe_size
        self.probe: Probe | None = None

    def start_probe(self) -> None:
        """Called by each fault right after the signal is sent."""
        self.probe = Probe(f"ws://127.0.0.1:{self.system.port}/ws", self.system.base,
                           self.probe_slide, self.probe_size, self.t0, self.rng, 60.0,
                           self.args.request_timeout + 5)
        self.probe.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, what: str) -> None:
        print(f"  [{self.now():7.2f}s] FAULT {what}", flush=True)

    def router_stats(self, timeout: float = 2.0) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.system.settings.stats_port}/stats"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())

    def worker_pids(self) -> list[int]:
        launcher = self.system.procs["workers"].pid
        return sorted(p for p in child_pids(launcher) if pid_alive(p))

    def registered(self) -> set[int]:
        try:
            return {w["pid"] for w in self.router_stats()["workers"]}
        except Exception:
            return set()

    def _poll(self, pred: Any, limit: float = 60.0) -> float | None:
        """Seconds since the load start when ``pred`` first held, None if it never did."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.halt.is_set():
            try:
                if pred():
                    return self.now()
            except Exception:
                pass
            time.sleep(0.05)
        return None

    def _client_recovery(self, fault: Fault, limit: float = 60.0) -> None:
        t_abs = self.t0 + fault.at
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.halt.is_set():
            firsts = [c.first_ok_sent_after(t_abs) for c in self.clients]
            if all(f is not None for f in firsts):
                break
            time.sleep(0.1)
        firsts = [c.first_ok_sent_after(t_abs) for c in self.clients]
        fault.clients = [None if f is None else f - t_abs for f in firsts]

    # the faults ----------------------------------------------------------------------------

    def kill_worker(self) -> Fault:
        pids = self.worker_pids()
        victim = self.rng.choice(pids)
        fault = Fault("kill-worker", self.now(), f"pid {victim}")
        os.kill(victim, signal.SIGKILL)
        self.start_probe()
        self.log(f"SIGKILL worker {victim}")
        fault.stats_detected = self._poll(lambda: victim not in self.registered())
        fault.stats_recovered = self._poll(
            lambda: len(r := self.registered()) == self.expected and victim not in r)
        return fault

    def stop_worker(self) -> Fault:
        # prefer a worker with work in flight (the nastier case)
        victim = None
        with contextlib.suppress(Exception):
            busy = [w["pid"] for w in self.router_stats()["workers"] if w["inflight"]]
            victim = self.rng.choice(busy) if busy else None
        victim = victim or self.rng.choice(self.worker_pids())
        fault = Fault("stop-worker", self.now(), f"pid {victim}, {self.args.stop_seconds}s")
        os.kill(victim, signal.SIGSTOP)
        self.start_probe()
        self.log(f"SIGSTOP worker {victim}")
        try:
            fault.stats_detected = self._poll(lambda: victim not in self.registered(),
                                              self.args.stop_seconds)
            remaining = self.t0 + fault.at + self.args.stop_seconds - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        finally:
            os.kill(victim, signal.SIGCONT)
        cont = self.now()
        self.log(f"SIGCONT worker {victim}")
        fault.notes.append(f"SIGCONT at +{cont - fault.at:.2f}s")
        if fault.stats_detected is None:
            fault.notes.append("never dropped from stats while stopped")
        fault.stats_recovered = self._poll(
            lambda: len(r := self.registered()) == self.expected and victim in r)
        if fault.stats_recovered is not None:
            fault.notes.append(f"re-registered {fault.stats_recovered - cont:.2f}s after SIGCONT")
        return fault

    def kill_router(self) -> Fault:
        old = self.system.procs["router"].pid
        fault = Fault("kill-router", self.now(), f"pid {old}, down {self.args.router_down}s")
        self.system.procs["router"].kill()
        self.start_probe()
        self.system.stop_process("router", signal.SIGKILL)
        self.log(f"SIGKILL router {old}")
        time.sleep(self.args.router_down)
        new = self.system.spawn("router", "router.cli").pid
        self.log(f"router restarted (pid {new})")
        fault.notes.append(f"restarted at +{self.now() - fault.at:.2f}s")
        fault.stats_recovered = self._poll(lambda: len(self.registered()) == self.expected)
        return fault

    def term_gateway(self) -> Fault:
        proc = self.system.procs["gateway"]
        fault = Fault("term-gateway", self.now(), f"pid {proc.pid}")
        self.log(f"SIGTERM gateway {proc.pid}")
        proc.send_signal(signal.SIGTERM)
        self.start_probe()
        try:
            code = self.system.stop_process("gateway", signal.SIGTERM)
            fault.notes.append(f"exited {code} after {self.now() - fault.at:.2f}s")
        except AssertionError as exc:
            fault.notes.append(f"DID NOT EXIT: {exc}")
        new = self.system.spawn("gateway", "wsgateway.cli").pid
        self.log(f"gateway restarted (pid {new})")

        def healthy() -> bool:
            url = f"{self.system.base}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(json.loads(resp.read()).get("router_available"))
        fault.stats_recovered = self._poll(healthy)
        return fault

    def run(self) -> None:
        actions = {"kill-worker": self.kill_worker, "stop-worker": self.stop_worker,
                   "kill-router": self.kill_router, "term-gateway": self.term_gateway}
        for at, kind in self.schedule:
            while self.now() < at:
                if self.halt.wait(min(0.2, at - self.now())):
                    return
            try:
                fault = actions[kind]()
            except Exception as exc:
                self.log(f"{kind} failed to inject: {type(exc).__name__}: {exc}")
                continue
            self._client_recovery(fault)
            if self.halt.is_set():
                fault.notes.append("the run ended before this fault's recovery was seen")
            if self.probe is not None:
                self.probe.join(65)
                fault.probe = self.probe.ok_at
                fault.probe_failures = dict(self.probe.failures)
                self.probe = None
            self.faults.append(fault)
            rec = [c for c in fault.clients if c is not None]
            self.log(f"{kind} done: stats recovered "
                     f"{fmt_since(fault.stats_recovered, fault.at)}, probe "
                     f"{fmt_since(fault.probe, fault.at)}, clients max "
                     f"{max(rec) if rec else float('nan'):.2f}s ({len(rec)}/{len(self.clients)})")


def fmt_since(t: float | None, since: float) -> str:
    return "never" if t is None else f"{t - since:.2f}s"


def make_schedule(duration: float, warmup: float) -> list[tuple[float, str]]:
    """Router and gateway early (their replacements then live long enough to be compared),
    worker kills spread over the rest; the last 15% is quiet."""
    kinds = ["kill-worker", "stop-worker", "kill-router", "term-gateway",
             "kill-worker", "kill-worker", "kill-worker"]
    if duration < 90:
        kinds = kinds[:4]
    start, end = warmup + 5, duration * 0.85
    step = (end - start) / len(kinds)
    return [(start + i * step, k) for i, k in enumerate(kinds)]
