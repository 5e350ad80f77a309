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

Recovery per fault, measured two ways:
  clients   per client, from the fault to the first OK tile reply to a request *sent*
            after the fault; the max (and median) over clients
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
import bisect
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import struct
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import websocket  # noqa: E402

from readers.demo_slide import write_demo_slide  # noqa: E402
from tests.helpers import System, child_pids, pid_alive  # noqa: E402

MiB = 1024 * 1024
RECENT_TILES = 300  # a client does not re-request its last 300 tiles (OpenSeadragon caches)
JPEG_SOI = b"\xff\xd8"
PNG_SIG = b"\x89PNG"


# --- slides ------------------------------------------------------------------------------

def ensure_slides(root: Path, count: int, width: int, height: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"soak-{i}-{width}x{height}.tiff"
        path = root / name
        if not path.exists():
            t0 = time.monotonic()
            write_demo_slide(path, width, height, seed=100 + i)
            print(f"  generated {path} in {time.monotonic() - t0:.1f}s", flush=True)
        names.append(name)
    return names


@dataclass(frozen=True)
class Geometry:
    slide: str
    levels: int  # dz_levels
    tiles: list[tuple[int, int]]  # (cols, rows) per level


def slide_geometry(system: System, slides: list[str]) -> list[Geometry]:
    ws = system.ws()
    try:
        out = []
        for s in slides:
            header, _ = ws.request({"op": "info", "slide": s})
            assert header.get("ok"), header
            out.append(Geometry(s, header["dz_levels"], [tuple(t) for t in header["dz_tiles"]]))
        return out
    finally:
        ws.close()


class Walk:
    """A viewer's pan/zoom walk: viewports of tiles around a centre that drifts, zooms and
    now and then switches slide. Yields (slide, level, col, row, format) forever."""

    def __init__(self, geoms: list[Geometry], rng: random.Random, zoom_levels: int = 6) -> None:
        self.geoms, self.rng, self.zoom_levels = geoms, rng, zoom_levels
        self._switch()

    def _switch(self) -> None:
        self.g = self.rng.choice(self.geoms)
        top = self.g.levels - 1
        self.level = self.rng.randint(max(0, top - self.zoom_levels + 1), top)
        self.x, self.y = self.rng.random(), self.rng.random()  # centre, fraction of slide

    def viewport(self) -> list[tuple[str, int, int, int, str]]:
        r = self.rng.random()
        top = self.g.levels - 1
        low = max(0, top - self.zoom_levels + 1)
        if r < 0.03:
            self._switch()
        elif r < 0.15:
            self.level = min(top, self.level + 1)
        elif r < 0.25:
            self.level = max(low, self.level - 1)
        else:
            self.x = min(1.0, max(0.0, self.x + self.rng.uniform(-0.08, 0.08)))
            self.y = min(1.0, max(0.0, self.y + self.rng.uniform(-0.08, 0.08)))
        cols, rows = self.g.tiles[self.level]
        cc, cr = int(self.x * (cols - 1)), int(self.y * (rows - 1))
        fmt = "png" if self.rng.random() < 0.03 else "jpeg"
        view = [(self.g.slide, self.level, c, r, fmt)
                for r in range(max(0, cr - 1), min(rows, cr + 2))
                for c in range(max(0, cc - 2), min(cols, cc + 3))]
        self.rng.shuffle(view)
        return view


# --- clients -----------------------------------------------------------------------------

@dataclass
class Req:
    rid: int
    msg: str
    first_sent: float
    last_sent: float
    resends: int = 0
    overdue_logged: bool = False


@dataclass
class Done:
    first_sent: float
    last_sent: float
    at: float
    ok: bool
    code: str | None
    resent: bool
    message: str = ""


@dataclass
class ClientStats:
    sent: int = 0
    replies: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    duplicates: int = 0
    unknown_ids: int = 0
    bad_payloads: int = 0
    resent: int = 0  # re-sends of pending requests after a reconnect
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: list[tuple[float, str]] = field(default_factory=list)
    overdue: list[tuple[float, int]] = field(default_factory=list)  # (when noticed, rid)


class Client(threading.Thread):
    """One websocket viewer keeping ``inflight`` tile requests outstanding."""

    def __init__(self, idx: int, url: str, origin: str, geoms: list[Geometry], inflight: int,
                 overdue_after: float, t0: float, stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"client-{idx}", daemon=True)
        self.idx, self.url, self.origin = idx, url, origin
        self.walk = Walk(geoms, random.Random(seed))
        self.inflight, self.overdue_after, self.t0 = inflight, overdue_after, t0
        self.stop_sending = stop
        self.give_up_at: float | None = None  # set by main after the load stops
        self.sock: websocket.WebSocket | None = None
        self.pending: dict[int, Req] = {}
        self.done: dict[int, Done] = {}
        self.ok_log: list[tuple[float, float]] = []  # (reply at, last sent), in reply order
        self.stats = ClientStats()
        self.queue: list[tuple[str, int, int, int, str]] = []
        self.recent: dict[tuple[str, int, int, int, str], None] = {}  # viewer's own cache
        self.next_id = 0
        self.lock = threading.Lock()  # guards pending/done for the fault thread's peeks

    def log(self, what: str) -> None:
        print(f"  [{time.monotonic() - self.t0:7.2f}s] client {self.idx}: {what}", flush=True)

    # connection --------------------------------------------------------------------------

    def _connect(self) -> bool:
        backoff = 0.05
        while True:
            if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                return False
            try:
                self.sock = websocket.create_connection(self.url, timeout=10, origin=self.origin)
                self.sock.settimeout(0.25)
                return True
            except Exception:
                self.stats.connect_failures += 1
                time.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    def _drop(self, why: str) -> None:
        self.stats.disconnects.append((time.monotonic() - self.t0, why))
        if self.sock is not None:
            with contextlib.suppress(Exception):
                self.sock.close()
        self.sock = None

    def _send(self, req: Req) -> None:
        assert self.sock is not None
        self.sock.send(req.msg)

    # requests ----------------------------------------------------------------------------

    def _new_request(self) -> Req:
        tries = 0
        while not self.queue:  # like a viewer: skip tiles it fetched recently
            view = self.walk.viewport()
            tries += 1
            self.queue = [t for t in view if t not in self.recent] if tries < 20 else view
        tile = self.queue.pop()
        self.recent[tile] = None
        if len(self.recent) > RECENT_TILES:
            del self.recent[next(iter(self.recent))]
        slide, level, col, row, fmt = tile
        self.next_id += 1
        msg = json.dumps({"id": self.next_id, "op": "tile", "slide": slide, "level": level,
                          "col": col, "row": row, "format": fmt})
        now = time.monotonic()
        req = Req(self.next_id, msg, now, now)
        with self.lock:
            self.pending[req.rid] = req
        self.stats.sent += 1
        return req

    def _active(self, now: float) -> int:
        """Pending requests still expected soon (overdue ones do not hold a slot)."""
        n = 0
        for req in self.pending.values():
            if now - req.last_sent <= self.overdue_after:
                n += 1
            elif not req.overdue_logged:
                req.overdue_logged = True
                self.stats.overdue.append((now - self.t0, req.rid))
                self.log(f"request {req.rid} unanswered for {now - req.last_sent:.1f}s")
        return n

    def _handle(self, opcode: int, data: bytes) -> None:
        now = time.monotonic()
        payload = b""
        if opcode == websocket.ABNF.OPCODE_BINARY:
            (n,) = struct.unpack(">I", data[:4])
            header = json.loads(data[4:4 + n])
            payload = data[4 + n:]
        else:
            header = json.loads(data)
        rid = header.get("id")
        if rid is None:  # a draining gateway's notice to stop sending; it then closes
            self.log(f"notice: {str(header)[:200]}")
            return
        with self.lock:
            req = self.pending.pop(rid, None)
            if req is None:
                if rid in self.done:
                    self.stats.duplicates += 1
                    self.log(f"duplicate reply for {rid}: {str(header)[:200]}")
                else:
                    self.stats.unknown_ids += 1
                    self.log(f"reply with unknown id: {str(header)[:200]}")
                return
            ok = bool(header.get("ok"))
            error = header.get("error") or {}
            code = None if ok else str(error.get("code"))
            self.done[rid] = Done(req.first_sent, req.last_sent, now, ok, code, req.resends > 0,
                                  "" if ok else str(error.get("message"))[:80])
            if ok:
                self.ok_log.append((now, req.last_sent))
        self.stats.replies += 1
        self.stats.outcomes["ok" if ok else code or "?"] += 1
        if ok:
            self.stats.bytes += len(payload)
            if not (payload.startswith(JPEG_SOI) or payload.startswith(PNG_SIG)):
                self.stats.bad_payloads += 1

    def run(self) -> None:
        while True:
            now = time.monotonic()
            if self.stop_sending.is_set() and (
                    not self.pending or (self.give_up_at is not None and now > self.give_up_at)):
                break
            if self.sock is None:
                if not self._connect():
                    break
                if self.stats.disconnects:
                    self.stats.reconnects += 1
                    resend = sorted(self.pending.values(), key=lambda r: r.rid)
                    if resend:
                        self.log(f"reconnected; re-sending {len(resend)} pending")
                    try:
                        for req in resend:
                            req.last_sent = time.monotonic()
                            req.resends += 1
                            req.overdue_logged = False
                            self.stats.resent += 1
                            self._send(req)
                    except Exception as exc:
                        self._drop(f"send after reconnect: {type(exc).__name__}")
                        continue
            try:
                if not self.stop_sending.is_set():
                    while self._active(time.monotonic()) < self.inflight:
                        self._send(self._new_request())
                else:
                    self._active(time.monotonic())
                opcode, data = self.sock.recv_data()  # type: ignore[union-attr]
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self._drop("closed by server")
                    continue
                self._handle(opcode, data)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as exc:  # connection dropped (reset, closed, refused ...)
                self._drop(f"{type(exc).__name__}: {exc}"[:120])
        if self.sock is not None:
            with contextlib.suppress(Exception):
                self.sock.close()

    # for recovery measurement --------------------------------------------------------------

    def first_ok_sent_after(self, t: float) -> float | None:
        with self.lock:
            log = self.ok_log
            for i in range(bisect.bisect_left(log, (t, 0.0)), len(log)):
                if log[i][1] >= t:
                    return log[i][0]
        return None


# --- processes, RSS ----------------------------------------------------------------------

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


# --- faults ------------------------------------------------------------------------------

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
                     f"{_fmt(fault.stats_recovered, fault.at)}, probe "
                     f"{_fmt(fault.probe, fault.at)}, clients max "
                     f"{max(rec) if rec else float('nan'):.2f}s ({len(rec)}/{len(self.clients)})")


def _fmt(t: float | None, since: float) -> str:
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


# --- report ------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def rss_table(sampler: Sampler, warmup: float) -> list[str]:
    lines = [f"{'role':9} {'pid':>7} {'seen s':>13} {'baseline@s':>10} {'base MiB':>9} "
             f"{'end MiB':>8} {'delta MiB':>9} {'2nd half MiB/min':>16} {'max MiB':>8}  note"]
    order = {"router": 0, "gateway": 1, "launcher": 2, "worker": 3}
    for pid in sorted(sampler.series, key=lambda p: (order.get(sampler.roles[p], 9),
                                                      sampler.series[p][0][0])):
        s = sampler.series[pid]
        first, last = s[0][0], s[-1][0]
        want = max(warmup, first + 10.0)
        base = next(((t, k) for t, k in s if t >= want), None)
        survived = last >= sampler.series_end - 3
        note = "survivor" if survived else "gone (killed/replaced)"
        if base is None or base[0] >= last:
            lines.append(f"{sampler.roles[pid]:9} {pid:>7} {first:5.0f}-{last:<6.0f} "
                         f"{'-':>10} {'-':>9} {s[-1][1] / 1024:8.1f} {'-':>9} {'-':>16} "
                         f"{max(k for _, k in s) / 1024:8.1f}  {note}, too short to compare")
            continue
        delta = (s[-1][1] - base[1]) / 1024
        # growth rate over the second half of the compared span: ~0 once caches are full
        mid = next((t, k) for t, k in s if t >= (base[0] + last) / 2)
        slope = ((s[-1][1] - mid[1]) / 1024 / ((last - mid[0]) / 60)
                 if last - mid[0] > 1 else float("nan"))
        lines.append(f"{sampler.roles[pid]:9} {pid:>7} {first:5.0f}-{last:<6.0f} {base[0]:10.0f} "
                     f"{base[1] / 1024:9.1f} {s[-1][1] / 1024:8.1f} {delta:+9.1f} {slope:+16.1f} "
                     f"{max(k for _, k in s) / 1024:8.1f}  {note}")
    return lines


def log_findings(logdir: Path) -> list[str]:
    out = []
    for log in sorted(logdir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        tb = sum("Traceback" in line for line in text)
        errs = [line for line in text if " ERROR " in line or " CRITICAL " in line]
        warns = [line for line in text if " WARNING " in line]
        out.append(f"  {log.name}: {len(text)} lines, {tb} tracebacks, {len(errs)} ERROR, "
                   f"{len(warns)} WARNING")
        for line in (errs[:5] if errs else []):
            out.append(f"      {line[:220]}")
    return out


# --- main --------------------------------------------------------------------------------

def main() -> int:
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
    args = ap.parse_args()
    duration = 40.0 if args.quick else args.duration
    warmup = min(15.0, duration * 0.15)
    w, h = (int(v) for v in args.slide_size.split("x"))

    print(f"slides under {args.slides_dir}", flush=True)
    slides = ensure_slides(args.slides_dir, args.slides, w, h)
    system = System(args.slides_dir, workers=2, heartbeat_interval=0.5, heartbeat_liveness=3,
                    request_timeout=args.request_timeout,
                    gateway_cache_bytes=args.gateway_cache_mib * MiB,
                    tile_cache_bytes=args.tile_cache_mib * MiB, log_level="INFO")
    logdir = args.keep_logs or Path(f"/tmp/tilerouter-soak-logs-{time.strftime('%H%M%S')}")
    print(f"starting system in {system.rundir} (gateway port {system.port}, router stats port "
          f"{system.settings.stats_port})", flush=True)
    system.start()
    stop = threading.Event()
    clients: list[Client] = []
    sampler: Sampler | None = None
    try:
        geoms = slide_geometry(system, slides)
        print("slides: " + ", ".join(f"{g.slide} ({g.levels} levels, top {g.tiles[-1]} tiles)"
                                     for g in geoms), flush=True)
        overdue_after = args.request_timeout + 10
        t0 = time.monotonic()
        sampler = Sampler(system, t0)
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
                            probe_slide=slides[0], probe_size=(w, h))
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
        end_rss_note = f"end RSS sampled at {load_end - t0:.0f}s (load stop)"
        give_up = load_end + args.request_timeout + 10
        for c in clients:
            c.give_up_at = give_up
        for c in clients:
            c.join(max(0.0, give_up - time.monotonic()) + 5)
        drained = time.monotonic() - load_end
        hung_clients = [c.idx for c in clients if c.is_alive()]
        injector.halt.set()
        injector.join(70)
        try:
            final_stats = system.stats()
        except Exception as exc:
            final_stats = {"error": repr(exc)}
    finally:
        stop.set()
        shutdown_notes = []
        component_pids = []
        if "workers" in system.procs:
            component_pids = list(child_pids(system.procs["workers"].pid))
        for name in ["gateway", "workers", "router"]:
            if name in system.procs:
                try:
                    code = system.stop_process(name)
                    if code != 0:
                        shutdown_notes.append(f"{name} exited {code} on SIGTERM")
                except AssertionError as exc:
                    shutdown_notes.append(str(exc))
        leftovers = [p for p in component_pids if pid_alive(p)]
        if leftovers:
            shutdown_notes.append(f"workers still alive after shutdown: {leftovers}")
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

    # --- summary ---------------------------------------------------------------------------
    print("\n=========================== SOAK SUMMARY ===========================")
    print(f"duration {duration:.0f}s, {args.clients} clients x {args.inflight} in flight, "
          f"request_timeout {args.request_timeout}s, heartbeat 0.5s x 3, "
          f"gateway cache {args.gateway_cache_mib} MiB, tile cache {args.tile_cache_mib} MiB")
    print(f"after load stop: waited {drained:.1f}s for outstanding replies "
          f"(bound {args.request_timeout + 10:.0f}s)"
          + (f"; clients still running: {hung_clients}" if hung_clients else ""))
    print("\nper client:")
    print(f"{'client':>6} {'sent':>7} {'replies':>7} {'ok':>7} {'lost':>5} {'resent':>6} "
          f"{'reconn':>6} {'dup':>4} {'unk':>4} {'badimg':>6} {'overdue':>7}  errors")
    totals: Counter[str] = Counter()
    sent = replies = lost = 0
    lost_ids: list[tuple[int, int]] = []
    for c in clients:
        s = c.stats
        c_lost = s.sent - s.replies
        sent, replies, lost = sent + s.sent, replies + s.replies, lost + c_lost
        totals.update(s.outcomes)
        lost_ids += [(c.idx, rid) for rid in sorted(c.pending)]
        errs = {k: v for k, v in s.outcomes.items() if k != "ok"}
        print(f"{c.idx:>6} {s.sent:>7} {s.replies:>7} {s.outcomes['ok']:>7} {c_lost:>5} "
              f"{s.resent:>6} {s.reconnects:>6} {s.duplicates:>4} {s.unknown_ids:>4} "
              f"{s.bad_payloads:>6} {len(s.overdue):>7}  {errs or ''}")
    done = [d for c in clients for d in c.done.values()]
    ok_done = [d for d in done if d.ok]
    lat = [(d.at - d.first_sent) * 1000 for d in ok_done]
    lat_clean = [(d.at - d.first_sent) * 1000 for d in ok_done if not d.resent]
    lat_all = [(d.at - d.first_sent) * 1000 for d in done]
    print(f"\ntotal: {sent} requests, {replies} replies, {totals['ok']} ok, "
          f"errors {dict((k, v) for k, v in totals.most_common() if k != 'ok')}")
    print(f"LOST: {lost}" + (f"  (client, id): {lost_ids[:20]}" if lost_ids else "  (ok)"))
    dup = sum(c.stats.duplicates for c in clients)
    unk = sum(c.stats.unknown_ids for c in clients)
    bad = sum(c.stats.bad_payloads for c in clients)
    print(f"duplicate replies {dup}, unknown ids {unk}, bad image payloads {bad}, "
          f"re-sent after reconnect {sum(c.stats.resent for c in clients)}, "
          f"reconnects {sum(c.stats.reconnects for c in clients)}, "
          f"failed connect attempts {sum(c.stats.connect_failures for c in clients)}")
    print(f"tiles/s (ok) over the load: {totals['ok'] / duration:.1f}; "
          f"MB received {sum(c.stats.bytes for c in clients) / 1e6:.1f}")
    print(f"latency ms, ok replies (first send -> reply): p50 {pct(lat, 50):.1f}  "
          f"p90 {pct(lat, 90):.1f}  p99 {pct(lat, 99):.1f}  max {max(lat, default=0):.1f}")
    print(f"  ok, never re-sent: p50 {pct(lat_clean, 50):.1f}  p99 {pct(lat_clean, 99):.1f}; "
          f"all replies incl. errors: p99 {pct(lat_all, 99):.1f}  "
          f"max {max(lat_all, default=0):.1f}")

    print("\nfaults (t = seconds since load start; recovery from the fault):")
    print("  detected: victim gone from router stats; stats: system whole again in stats;")
    print("  probe: first OK uncacheable region request (fresh connection) sent after the fault;")
    print("  cl max/med: per client, first OK tile reply to a request sent after the fault")
    print(f"{'t':>7} {'fault':13} {'detail':26} {'detected':>8} {'stats':>7} {'probe':>7} "
          f"{'cl max':>7} {'cl med':>7}  client errors until next fault / notes")
    faults = injector.faults
    for i, f in enumerate(faults):
        nxt = faults[i + 1].at if i + 1 < len(faults) else duration + 1e9
        errs = Counter(d.code for d in done if not d.ok
                       and f.at <= d.at - t0 < nxt)
        rec = [c for c in f.clients if c is not None]
        missing = len(f.clients) - len(rec)
        cl_max = f"{max(rec):.2f}s" if rec else "never"
        cl_med = f"{statistics.median(rec):.2f}s" if rec else "-"
        det = "-" if f.stats_detected is None else f"{f.stats_detected - f.at:.2f}s"
        notes = [*f.notes]
        if f.probe_failures:
            notes.append(f"probe failures {f.probe_failures}")
        messages = Counter(f"{d.code}: {d.message}" for d in done if not d.ok
                           and f.at <= d.at - t0 < nxt)
        if messages:
            notes.append("messages " + ", ".join(f"{m!r} x{n}" for m, n in
                                                  messages.most_common(4)))
        if missing:
            notes.append(f"{missing} client(s) never got an OK tile again within 60 s")
        print(f"{f.at:7.2f} {f.kind:13} {f.detail:26} {det:>8} "
              f"{_fmt(f.stats_recovered, f.at):>7} {_fmt(f.probe, f.at):>7} "
              f"{cl_max:>7} {cl_med:>7}  "
              f"{dict(errs) or '{}'}; {'; '.join(notes)}")
    injected = {k for _, k in schedule}
    if len(faults) < len(schedule):
        print(f"  only {len(faults)} of {len(schedule)} scheduled faults ran ({injected})")

    print(f"\nRSS (VmRSS; baseline = first sample at/after max(warm-up {warmup:.0f}s, "
          f"first seen + 10 s); {end_rss_note}):")
    assert sampler is not None
    for line in rss_table(sampler, warmup):
        print("  " + line)

    print("\nrouter stats at the end (counters since the last router restart):")
    routing = final_stats.get("routing", final_stats)
    print("  " + json.dumps(routing)[:900])
    if "gateway" in final_stats:
        print("  gateway: " + json.dumps(final_stats["gateway"])[:900])
    print("\noverdue requests (no reply within request_timeout + 10 s while running):")
    od = [(c.idx, t, rid) for c in clients for t, rid in c.stats.overdue]
    print("  none" if not od else "  " + ", ".join(f"c{i}#{r}@{t:.0f}s" for i, t, r in od[:30]))
    print("\ndisconnects per client (t, why):")
    for c in clients:
        if c.stats.disconnects:
            print(f"  client {c.idx}: " + "; ".join(f"{t:.1f}s {why}"
                                                    for t, why in c.stats.disconnects[:5]))
    print(f"\ncomponent logs and rss.csv (every sample) copied to {logdir}:")
    for line in log_findings(logdir):
        print(line)
    if shutdown_notes:
        print("shutdown: " + "; ".join(shutdown_notes))
    else:
        print("shutdown: every component exited 0 on SIGTERM, no worker left behind")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
