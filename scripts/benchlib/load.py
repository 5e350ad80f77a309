"""The asyncio load generator: C virtual viewers, each with up to ``inflight`` requests.

Transports:
  ws    one websocket per viewer (tornado client), requests matched to replies by id.
  http  ``inflight`` raw HTTP/1.1 keep-alive connections per viewer (tornado's
        AsyncHTTPClient opens a new connection per request, which costs more than
        the tile itself on this path).

Each viewer runs ``inflight`` lanes that pull the next request of its trace in order,
so a viewer never has more than ``inflight`` outstanding. No new request starts after
the deadline or once the viewer's request budget is spent; outstanding ones finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from .trace import TileRequest

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    ok: bool
    nbytes: int = 0
    code: str | None = None
    done_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class LoadPlan:
    transport: str  # "ws" or "http"
    inflight: int  # per viewer
    duration: float | None  # seconds; None = until the budgets are spent
    budgets: Sequence[int] | None  # requests per viewer; None = until the deadline
    request_timeout: float = 60.0
    rate: float | None = None  # requests per second started over all viewers; None = free


@dataclass
class LoadResult:
    ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    elapsed: float = 0.0
    unique: dict[TileRequest, int] = field(default_factory=dict)  # tile -> bytes

    def record(self, request: TileRequest, outcome: Outcome, started: float) -> None:
        self.latencies_ms.append((outcome.done_at - started) * 1000.0)
        if outcome.ok:
            self.ok += 1
            self.bytes += outcome.nbytes
            self.unique[request] = outcome.nbytes
        else:
            self.errors[outcome.code or "unknown"] += 1


class ViewerClient(Protocol):
    async def fetch(self, request: TileRequest, lane: int) -> Outcome: ...

    async def close(self) -> None: ...


# --- websocket -----------------------------------------------------------------------------


class WsViewer:
    """One websocket; a reader task resolves the pending request of each reply's id."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, base_url: str) -> WsViewer:
        url = "ws" + base_url.removeprefix("http") + "/ws"
        return cls(await websocket_connect(url, max_message_size=MAX_MESSAGE_BYTES))

    async def fetch(self, request: TileRequest, lane: int) -> Outcome:
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        message = json.dumps({"id": rid, "op": "tile", "slide": request.slide,
                              "level": request.level, "col": request.col,
                              "row": request.row, "format": "jpeg"})
        try:
            await self.conn.write_message(message)
            return await fut
        except (WebSocketClosedError, StreamClosedError) as exc:  # this request failed
            log.debug("websocket request failed: %r", exc)
            return Outcome(False, code="conn_error")
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        while True:
            message = await self.conn.read_message()
            if message is None:
                self._fail_pending("conn_closed")
                return
            try:
                rid, outcome = parse_ws_reply(message)
            except (ValueError, struct.error, AttributeError) as exc:
                log.warning("unparseable websocket message (%r): %.80r", exc, message)
                continue
            fut = self._pending.get(rid) if isinstance(rid, int) else None
            if fut is not None and not fut.done():
                fut.set_result(outcome)
            elif fut is None:  # its request timed out or was cancelled
                log.debug("websocket reply with unknown id %r", rid)

    def _fail_pending(self, code: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(Outcome(False, code=code))

    async def close(self) -> None:
        self.conn.close()
        await asyncio.wait({self._reader}, timeout=5)
        self._reader.cancel()  # no-op once it has seen the close


def parse_ws_reply(message: str | bytes) -> tuple[object, Outcome]:
    """(id, outcome) of one server message: binary tile frame or text JSON error."""
    if isinstance(message, bytes):
        (head_len,) = struct.unpack_from(">I", message)
        header = json.loads(message[4:4 + head_len])
        nbytes = len(message) - 4 - head_len
        return header.get("id"), Outcome(bool(header.get("ok")), nbytes)
    body = json.loads(message)
    error = body.get("error") or {}
    if body.get("ok"):
        return body.get("id"), Outcome(False, code="unexpected_text_reply")
    return body.get("id"), Outcome(False, code=str(error.get("code", "unknown")))


# --- HTTP/1.1 keep-alive ---------------------------------------------------------------------


class HttpConnection:
    """One keep-alive connection, one request at a time; reconnects after any failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n"
                           .encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, headers = parse_http_head(head)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            raise ValueError("chunked responses are not supported by the bench client")
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def parse_http_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def tile_path(request: TileRequest) -> str:
    return (f"/dz/{quote(request.slide)}_files/{request.level}/"
            f"{request.col}_{request.row}.jpeg")


def http_error_code(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"


class HttpViewer:
    """``lanes`` keep-alive connections; lane i always uses connection i. Each tile is
    fetched at ``path(tile)`` (tilerouter's DeepZoom URL unless another server's)."""

    def __init__(self, base_url: str, lanes: int,
                 path: Callable[[TileRequest], str] | None = None) -> None:
        hostport = base_url.removeprefix("http://")
        host, _, port = hostport.partition(":")
        self.connections = [HttpConnection(host, int(port)) for _ in range(lanes)]
        self.path = path or tile_path

    async def fetch(self, request: TileRequest, lane: int) -> Outcome:
        conn = self.connections[lane]
        try:
            status, body = await conn.get(self.path(request))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            log.debug("http request failed: %r", exc)
            await conn.close()
            return Outcome(False, code="conn_error")
        if status == 200:
            return Outcome(True, len(body))
        return Outcome(False, code=http_error_code(status, body))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections))


# --- driver ---------------------------------------------------------------------------------


class Budget:
    """Whether a viewer may start another request: before the deadline and within budget."""

    def __init__(self, plan: LoadPlan, viewers: int) -> None:
        now = time.monotonic()
        self.deadline = now + plan.duration if plan.duration is not None else float("inf")
        self.left = list(plan.budgets) if plan.budgets is not None else [-1] * viewers
        self.interval = 1.0 / plan.rate if plan.rate else 0.0
        self._next_start = now

    async def pace(self) -> None:
        """With a rate, wait for the next start slot (slots missed while the server was
        slow are not made up in a burst)."""
        if self.interval:
            now = time.monotonic()
            slot = max(self._next_start, now)
            self._next_start = slot + self.interval
            await asyncio.sleep(slot - now)

    def stop(self) -> None:
        self.deadline = 0.0

    def take(self, viewer: int) -> bool:
        if time.monotonic() >= self.deadline or self.left[viewer] == 0:
            return False
        self.left[viewer] -= 1
        return True


async def open_viewer(base_url: str, plan: LoadPlan) -> ViewerClient:
    if plan.transport == "ws":
        return await WsViewer.connect(base_url)
    if plan.transport == "http":
        return HttpViewer(base_url, plan.inflight)
    raise ValueError(f"unknown transport {plan.transport!r}")


async def run_lane(client: ViewerClient, lane: int, viewer: int, trace: Iterator[TileRequest],
                   budget: Budget, plan: LoadPlan, result: LoadResult) -> None:
    while budget.take(viewer):
        await budget.pace()
        request = next(trace)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(plan.request_timeout):  # wait_for can eat a cancel
                outcome = await client.fetch(request, lane)
        except TimeoutError:
            outcome = Outcome(False, code="client_timeout")
        result.record(request, outcome, started)


async def run_viewer(viewer: int, base_url: str, trace: Iterator[TileRequest], budget: Budget,
                     plan: LoadPlan, result: LoadResult) -> None:
    try:
        client = await open_viewer(base_url, plan)
    except OSError as exc:
        log.warning("viewer %d could not connect: %s", viewer, exc)
        result.errors["connect_failed"] += 1
        return
    try:
        await asyncio.gather(*(run_lane(client, lane, viewer, trace, budget, plan, result)
                               for lane in range(plan.inflight)))
    finally:
        await client.close()


async def run_load(base_url: str, traces: Sequence[Iterator[TileRequest]],
                   plan: LoadPlan) -> LoadResult:
    """Replay one trace per viewer against the server; returns what the clients saw."""
    result = LoadResult()
    budget = Budget(plan, len(traces))
    started = time.perf_counter()
    try:
        await asyncio.gather(*(run_viewer(v, base_url, trace, budget, plan, result)
                               for v, trace in enumerate(traces)))
    except asyncio.CancelledError:
        budget.stop()  # no lane starts another request, even one that missed the cancel
        raise
    result.elapsed = time.perf_counter() - started
    return result
