"""The whole ZeroMQ wire protocol between gateways, router and workers.

Every message is ``[VERSION, COMMAND, HEADER, *PAYLOAD]`` where HEADER is a small
UTF-8 JSON object and PAYLOAD (at most one frame) is raw tile bytes, sent with
``copy=False`` and never re-encoded. On a ROUTER socket the peer identity frame
comes first. No other module builds or indexes frames: they call ``encode`` to
send and ``parse`` to receive.

Commands
  REQUEST    gateway->router {rid, op, slide, ...}; router->worker adds {tid}
  REPLY      worker->router {tid, ok, ..., slides, cache}; router->gateway {rid, ok, ...}
  REGISTER   worker->router {pid, host, capacity, slides, cache}
  HEARTBEAT  both ways; a worker's carries the same state as REGISTER,
             the router's to a worker {waiting, oldest} (its wait queue),
             a gateway's is echoed by the router (liveness check)
  DISCONNECT either side is leaving

A REQUEST whose op names an internal service (``mmi.*``) is answered by the router.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import zmq

from config.errors import ProtocolError

VERSION = b"TR1"
REQUEST = b"\x01"
REPLY = b"\x02"
REGISTER = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
COMMANDS = {REQUEST: "REQUEST", REPLY: "REPLY", REGISTER: "REGISTER",
            HEARTBEAT: "HEARTBEAT", DISCONNECT: "DISCONNECT"}

MAX_HEADER_BYTES = 8 * 1024 * 1024  # a page of the slide list is the largest header
# REQUEST ops the router answers itself (internal services, as Majordomo's mmi.*)
SERVICE_STATS = "mmi.stats"
SERVICE_READY = "mmi.ready"  # {"ready": at least one worker registered, "workers": N}

Payload = bytes | zmq.Frame | memoryview


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed message; ``payload`` stays a zmq.Frame so it can be forwarded uncopied."""

    command: bytes
    header: dict[str, Any]
    payload: Payload | None = None
    identity: bytes | None = None

    @property
    def name(self) -> str:
        return COMMANDS.get(self.command, "?")


def encode(
    command: bytes,
    header: dict[str, Any],
    payload: Payload | None = None,
    identity: bytes | None = None,
) -> list[Payload]:
    """Frames for ``send_multipart(frames, copy=False)``."""
    frames: list[Payload] = [] if identity is None else [identity]
    frames += [VERSION, command, json.dumps(header, separators=(",", ":")).encode()]
    if payload is not None:
        frames.append(payload)
    return frames


_MORE_NOWAIT = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_NOWAIT = int(zmq.NOBLOCK)


def send_nowait(sock: zmq.Socket, frames: list[Payload]) -> None:
    """``send_multipart(frames, NOBLOCK, copy=False)`` without pyzmq's per-frame enum
    arithmetic (a measurable share of the router's CPU). Raises zmq.Again/ZMQError."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _MORE_NOWAIT if i < last else _NOWAIT, copy=False)


def parse(frames: list[Any], routed: bool = False) -> Message:
    """Validate and decode received frames; raise ProtocolError on anything malformed.

    ``routed`` is True on ROUTER sockets, whose first frame is the peer identity.
    """
    frames = list(frames)
    identity = None
    if routed:
        if not frames:
            raise ProtocolError("empty message")
        identity = _bytes(frames.pop(0))
    if len(frames) not in (3, 4):
        raise ProtocolError(f"expected 3 or 4 frames, got {len(frames)}")
    version, command, raw_header = (_bytes(f) for f in frames[:3])
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version[:16]!r}")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command[:8]!r}")
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw_header)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("header is not valid JSON (or nested too deeply)") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    payload = frames[3] if len(frames) == 4 else None
    return Message(command, header, payload, identity)


def payload_bytes(payload: Payload | None) -> bytes:
    """The payload as bytes (one copy, only where a consumer needs ``bytes``)."""
    if payload is None:
        return b""
    return _bytes(payload)


def _bytes(frame: Any) -> bytes:
    if isinstance(frame, zmq.Frame):
        return frame.bytes
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    raise ProtocolError(f"frame of type {type(frame).__name__}")
