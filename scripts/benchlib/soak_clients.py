"""The soak's load: websocket viewers walking over the slides, tracking every request id.

A client keeps ``inflight`` tile requests outstanding, reconnects with backoff when its
websocket drops and re-sends what was pending on the old connection (counted once), and
records when each request was first and last sent and answered. On a gateway's
``reconnect`` notice (README "Websocket protocol") it hands off as the viewer does: a new
connection at once, new requests on it, the old one read until its replies are in (then
closed); what is still unanswered when the old one closes is re-sent on the new one.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import random
import select
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import websocket

from .slides import Geometry

RECENT_TILES = 300  # a client does not re-request its last 300 tiles (OpenSeadragon caches)
JPEG_SOI = b"\xff\xd8"
PNG_SIG = b"\x89PNG"


class Walk:
    """A viewer's pan/zoom walk: viewports of tiles around a centre that drifts, zooms and
    now and then switches slide. Yields (slide, level, col, row, format) forever."""

    def __init__(self, geoms: dict[str, Geometry], rng: random.Random,
                 zoom_levels: int = 6) -> None:
        self.geoms, self.rng, self.zoom_levels = geoms, rng, zoom_levels
        self._switch()

    def _switch(self) -> None:
        self.slide = self.rng.choice(list(self.geoms))
        self.g = self.geoms[self.slide]
        top = self.g.max_level
        self.level = self.rng.randint(max(0, top - self.zoom_levels + 1), top)
        self.x, self.y = self.rng.random(), self.rng.random()  # centre, fraction of slide

    def viewport(self) -> list[tuple[str, int, int, int, str]]:
        r = self.rng.random()
        top = self.g.max_level
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
        view = [(self.slide, self.level, c, r, fmt)
                for r in range(max(0, cr - 1), min(rows, cr + 2))
                for c in range(max(0, cc - 2), min(cols, cc + 3))]
        self.rng.shuffle(view)
        return view


@dataclass
class Req:
    rid: int
    msg: str
    first_sent: float
    last_sent: float
    resends: int = 0
    overdue_logged: bool = False
    on: websocket.WebSocket | None = None  # the connection it was last sent on


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
    handoffs: int = 0  # reconnect notices followed (not counted as disconnects)
    connect_failures: int = 0
    disconnects: list[tuple[float, str]] = field(default_factory=list)
    overdue: list[tuple[float, int]] = field(default_factory=list)  # (when noticed, rid)


class Client(threading.Thread):
    """One websocket viewer keeping ``inflight`` tile requests outstanding."""

    def __init__(self, idx: int, url: str, origin: str, geoms: dict[str, Geometry], inflight: int,
                 overdue_after: float, t0: float, stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"client-{idx}", daemon=True)
        self.idx, self.url, self.origin = idx, url, origin
        self.walk = Walk(geoms, random.Random(seed))
        self.inflight, self.overdue_after, self.t0 = inflight, overdue_after, t0
        self.stop_sending = stop
        self.give_up_at: float | None = None  # set by main after the load stops
        self.sock: websocket.WebSocket | None = None
        self.old: websocket.WebSocket | None = None  # handing off: read until answered
        self.connect_at = 0.0  # next connect attempt (backoff after a failure)
        self.backoff = 0.05
        self.handoff_at: list[float] = []  # when each notice arrived (monotonic)
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
        """One attempt; after a failure the next waits a growing backoff (none on a
        notice: a sibling gateway is expected to be there)."""
        try:
            self.sock = websocket.create_connection(self.url, timeout=10, origin=self.origin)
            self.sock.settimeout(0.25)
            self.backoff = 0.05
            return True
        except Exception:
            self.stats.connect_failures += 1
            self.connect_at = time.monotonic() + self.backoff
            self.backoff = min(2.0, self.backoff * 2)
            return False

    def _drop(self, why: str) -> None:
        self.stats.disconnects.append((time.monotonic() - self.t0, why))
        if self.sock is not None:
            with contextlib.suppress(Exception):
                self.sock.close()
        self.sock = None

    def _send(self, req: Req) -> None:
        assert self.sock is not None
        req.on = self.sock
        self.sock.send(req.msg)

    def _hand_off(self) -> None:
        """The notice: the current connection becomes the old one; connect now."""
        self.stats.handoffs += 1
        self.handoff_at.append(time.monotonic())
        if self.old is not None:  # a second notice before the first hand-off ended
            self._close_old()
        self.old, self.sock = self.sock, None
        self.connect_at = 0.0
        self._close_old_if_done()

    def _close_old_if_done(self) -> None:
        if self.old is not None and not any(r.on is self.old for r in self.pending.values()):
            self._close_old()

    def _close_old(self) -> None:
        """Closed (by us or the server): what it left unanswered goes on the new one."""
        old, self.old = self.old, None
        with contextlib.suppress(Exception):
            old.close()  # type: ignore[union-attr]
        for req in sorted(self.pending.values(), key=lambda r: r.rid):
            if req.on is old:
                req.on = None
                if self.sock is not None:
                    self._resend(req)

    def _resend(self, req: Req) -> None:
        req.last_sent = time.monotonic()
        req.resends += 1
        req.overdue_logged = False
        self.stats.resent += 1
        self._send(req)

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

    def _handle(self, sock: websocket.WebSocket, opcode: int, data: bytes) -> None:
        now = time.monotonic()
        payload = b""
        if opcode == websocket.ABNF.OPCODE_BINARY:
            (n,) = struct.unpack(">I", data[:4])
            header = json.loads(data[4:4 + n])
            payload = data[4 + n:]
        else:
            header = json.loads(data)
        rid = header.get("id")
        if rid is None:
            if header.get("notice") == "reconnect" and sock is self.sock:
                self._hand_off()
            else:
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
            give_up = self.give_up_at is not None and now > self.give_up_at
            if self.stop_sending.is_set() and (not self.pending or give_up):
                break
            if self.sock is None:
                if give_up:
                    break
                if now >= self.connect_at and self._connect():
                    if not self._after_connect():
                        continue
                elif self.sock is None and self.old is None:  # nothing to read meanwhile
                    time.sleep(min(0.25, max(0.0, self.connect_at - now)))
                    continue
            try:
                if self.sock is not None and not self.stop_sending.is_set():
                    while self._active(time.monotonic()) < self.inflight:
                        self._send(self._new_request())
                else:
                    self._active(time.monotonic())
            except Exception as exc:
                self._drop(f"send: {type(exc).__name__}: {exc}"[:120])
                continue
            self._receive()
        for sock in (self.sock, self.old):
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()

    def _after_connect(self) -> bool:
        """Re-send what a dropped connection left unanswered (not what the old one of a
        hand-off still owes); False when the new connection broke at once."""
        if self.stats.disconnects:
            self.stats.reconnects += 1
        resend = sorted((r for r in self.pending.values() if r.on is not self.old
                         or r.on is None), key=lambda r: r.rid)
        if resend:
            self.log(f"connected; re-sending {len(resend)} pending")
        try:
            for req in resend:
                self._resend(req)
        except Exception as exc:
            self._drop(f"send after reconnect: {type(exc).__name__}")
            return False
        return True

    def _receive(self) -> None:
        """One message from each connection that has one (waits up to 0.25 s)."""
        socks = [s for s in (self.sock, self.old) if s is not None]
        if not socks:
            return
        if len(socks) > 1:
            with contextlib.suppress(OSError, ValueError):  # a closed one: recv says so
                socks, _, _ = select.select(socks, [], [], 0.25)
        for sock in socks:
            try:
                opcode, data = sock.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise ConnectionError("closed by server")
                self._handle(sock, opcode, data)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as exc:  # connection dropped (reset, closed, refused ...)
                if sock is self.old:
                    self._close_old()
                elif sock is self.sock:
                    self._drop(f"{type(exc).__name__}: {exc}"[:120])
                continue
            if sock is self.old:
                self._close_old_if_done()

    # for recovery measurement --------------------------------------------------------------

    def first_ok_sent_after(self, t: float) -> float | None:
        with self.lock:
            log = self.ok_log
            for i in range(bisect.bisect_left(log, (t, 0.0)), len(log)):
                if log[i][1] >= t:
                    return log[i][0]
        return None
