#!/usr/bin/env python3
"""A lean websocket load generator for tilerouter's ``/ws`` (what wrk is for HTTP).

    python scripts/peers/wsdrive.py PORT LISTFILE [--procs 2] [--conns 8] [--window 4]
                                    [--duration 10] [--offset 0]

LISTFILE holds one tile per line as ``slide level col row``. Each of ``--procs``
processes opens ``--conns`` websockets (a viewer's connection each) and keeps
``--window`` requests in flight on every one, walking the list like wrk's walk.lua
(process p, connection c starts at its own offset and strides over the list). Raw
sockets, precomputed request frames and one ``send`` per batch keep the client cheap,
so the server, not the generator, is what is measured. Prints one line in the shape of
walk.lua's (``status`` counts error replies; the socket-error fields are always 0, a
broken connection ends the run with an exception instead):

    BENCH requests=N status=E connect=0 read=0 write=0 timeout=0 duration_us=D
          p50_us=P p99_us=Q repeats=0 next=0

Latency is from writing a request to reading its whole reply (matched by id).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import selectors
import socket
import struct
import sys
import time

RECV = 1 << 18


def request_frame(rid: int, slide: str, level: int, col: int, row: int) -> bytes:
    """A masked text frame (mask key 0: XOR is a no-op, the mask bit is what RFC 6455 asks)."""
    body = json.dumps({"id": rid, "op": "tile", "slide": slide, "level": level, "col": col,
                       "row": row}, separators=(",", ":")).encode()
    n = len(body)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + struct.pack(
        ">H", n)
    return head + b"\0\0\0\0" + body


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
                  ).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the websocket handshake")
        buf += chunk
    status = buf.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(f"upgrade refused: {status!r}")
    if buf.index(b"\r\n\r\n") + 4 != len(buf):
        raise ConnectionError("unexpected bytes after the handshake")
    sock.setblocking(False)
    return sock


class Conn:
    def __init__(self, sock: socket.socket, frames: list[bytes], start: int, stride: int
                 ) -> None:
        self.sock = sock
        self.frames = frames
        self.next = start
        self.stride = stride
        self.buf = bytearray()
        self.sent_at: dict[int, float] = {}
        self.out: list[bytes] = []

    def queue_next(self, now: float) -> None:
        rid = self.next % len(self.frames)  # the id inside the frame is its list index
        self.next += self.stride
        self.sent_at[rid] = now
        self.out.append(self.frames[rid])

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.setblocking(False)

    def replies(self) -> list[tuple[int, bool]]:
        """(id, ok) of every complete server frame in the buffer."""
        done = []
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            hdr = 2
            if b1 == 126:
                if len(buf) - pos < 4:
                    break
                (n,) = struct.unpack_from(">H", buf, pos + 2)
                hdr = 4
            elif b1 == 127:
                if len(buf) - pos < 10:
                    break
                (n,) = struct.unpack_from(">Q", buf, pos + 2)
                hdr = 10
            else:
                n = b1
            if len(buf) - pos < hdr + n:
                break
            opcode = buf[pos] & 0x0F
            start = pos + hdr
            if opcode == 2:  # binary: 4-byte header length, JSON header, image
                (hl,) = struct.unpack_from(">I", buf, start)
                head = json.loads(bytes(buf[start + 4:start + 4 + hl]))
                done.append((head.get("id"), bool(head.get("ok"))))
            elif opcode == 1:  # text: an error reply
                head = json.loads(bytes(buf[start:start + n]))
                if os.environ.get("WSDRIVE_DEBUG"):
                    sys.stderr.write(f"{head}\n")
                done.append((head.get("id"), False))
            elif opcode == 8:
                raise ConnectionError("server closed the websocket")
            pos = start + n
        del buf[:pos]
        return done


def drive(port: int, frames: list[bytes], conns: int, window: int, duration: float,
          first: int, stride: int, out: mp.Queue) -> None:
    sel = selectors.DefaultSelector()
    all_conns = []
    for c in range(conns):
        conn = Conn(connect(port), frames, first + c, stride)
        all_conns.append(conn)
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    lat: list[float] = []
    ok = errors = 0
    t0 = time.perf_counter()
    end = t0 + duration
    for conn in all_conns:
        for _ in range(window):
            conn.queue_next(t0)
        conn.flush()
    open_ = len(all_conns) * window
    while open_ > 0 and time.perf_counter() < end + 10:
        for key, _ in sel.select(timeout=1.0):
            conn = key.data
            chunk = conn.sock.recv(RECV)
            if not chunk:
                raise ConnectionError("server closed the connection")
            conn.buf += chunk
            now = time.perf_counter()
            for rid, good in conn.replies():
                sent = conn.sent_at.pop(rid, None)
                if sent is not None:
                    lat.append(now - sent)
                ok += good
                errors += not good
                open_ -= 1
                if now < end:
                    conn.queue_next(now)
                    open_ += 1
            conn.flush()
    elapsed = time.perf_counter() - t0
    out.put((ok, errors, elapsed, lat))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("listfile")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--conns", type=int, default=8, help="websockets per process")
    p.add_argument("--window", type=int, default=4, help="requests in flight per websocket")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--offset", type=int, default=0)
    args = p.parse_args(argv)
    tiles = []
    with open(args.listfile) as fh:
        for line in fh:
            if line.strip():
                slide, level, col, row = line.split()
                tiles.append((slide, int(level), int(col), int(row)))
    if not tiles:
        p.error("empty tile list")
    while len(tiles) < 4 * args.window * args.conns * args.procs:
        tiles += tiles  # ids are list indexes: none may be in flight twice at once
    frames = [request_frame(i, *t) for i, t in enumerate(tiles)]
    out: mp.Queue = mp.Queue()
    stride = args.procs * args.conns
    procs = [mp.Process(target=drive, args=(args.port, frames, args.conns, args.window,
                                            args.duration, args.offset + i * args.conns,
                                            stride, out))
             for i in range(args.procs)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.duration + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    lat = sorted(x for r in results for x in r[3])

    def pct(q: float) -> int:
        return int(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6) if lat else 0

    sys.stdout.write(f"BENCH requests={ok + errors} status={errors} connect=0 read=0 write=0 "
                     f"timeout=0 duration_us={int(elapsed * 1e6)} p50_us={pct(0.5)} "
                     f"p99_us={pct(0.99)} repeats=0 next=0\n")
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
