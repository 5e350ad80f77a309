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
             a gateway's is echoed by the router (liveness check)
  DISCONNECT either side is leaving
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import zmq

from readers.paths import normalize_slide_path
from router.errors import BadRequest, MessageTooLarge, OutOfRange, ProtocolError, UnknownOp

VERSION = b"TR1"
REQUEST = b"\x01"
REPLY = b"\x02"
REGISTER = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
COMMANDS = {REQUEST: "REQUEST", REPLY: "REPLY", REGISTER: "REGISTER",
            HEARTBEAT: "HEARTBEAT", DISCONNECT: "DISCONNECT"}

MAX_HEADER_BYTES = 64 * 1024
MAX_SLIDE_PATH = 1024
OPS = ("tile", "info", "list", "associated", "region")
TILE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
REGION_QUALITIES = ("default", "color", "gray", "bitonal")
MAX_REGION_EDGE = 65500  # largest output edge of a "region" (JPEG stops at 65535)

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


# --- request validation (shared by gateway and worker) -------------------------------


def check_request(obj: Any, max_associated_size: int = 1024) -> dict[str, Any]:
    """Validate a client request; return its canonical form (only known fields).

    Raises BadRequest/UnknownOp/OutOfRange with a message that names the offending field,
    Forbidden for a slide path that could leave the slide root.
    """
    if not isinstance(obj, dict):
        raise BadRequest("request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise BadRequest("field 'op' is required and must be a string")
    if op not in OPS:
        raise UnknownOp(f"unknown op {op[:32]!r}; expected one of {', '.join(OPS)}")
    req: dict[str, Any] = {"op": op}
    if op == "list":
        return req
    # canonical, root-confined syntax (Forbidden otherwise); symlinks are the worker's job
    req["slide"] = normalize_slide_path(_string(obj, "slide", MAX_SLIDE_PATH))
    if op == "tile":
        for key in ("level", "col", "row"):
            req[key] = _int(obj, key, 0, 1 << 31)
        if obj.get("prefetch") is True:  # render into the cache, reply without bytes
            req["prefetch"] = True
        fmt = obj.get("format", None)
        if fmt is not None:
            if not isinstance(fmt, str) or fmt not in TILE_FORMATS:
                raise BadRequest(f"field 'format' must be one of {', '.join(TILE_FORMATS)}")
            req["format"] = fmt
    elif op == "associated":
        req["name"] = _string(obj, "name", 128)
        req["size"] = (
            _int(obj, "size", 16, max_associated_size) if "size" in obj
            else min(256, max_associated_size)
        )
    elif op == "region":  # level-0 rectangle scaled to out_w x out_h (IIIF, readers/region.py)
        for key in ("x", "y"):
            req[key] = _int(obj, key, 0, 1 << 31)
        for key in ("w", "h"):
            req[key] = _int(obj, key, 1, 1 << 31)
        for key in ("out_w", "out_h"):
            req[key] = _int(obj, key, 1, MAX_REGION_EDGE)
        req["format"] = obj.get("format", "jpeg")
        if not isinstance(req["format"], str) or req["format"] not in TILE_FORMATS:
            raise BadRequest(f"field 'format' must be one of {', '.join(TILE_FORMATS)}")
        req["quality"] = obj.get("quality", "default")
        if req["quality"] not in REGION_QUALITIES:
            raise BadRequest(f"field 'quality' must be one of {', '.join(REGION_QUALITIES)}")
        rotation = obj.get("rotation", 0)
        if (isinstance(rotation, bool) or not isinstance(rotation, (int, float))
                or not 0 <= rotation < 360):
            raise BadRequest("field 'rotation' must be a number of degrees in [0, 360)")
        req["rotation"] = rotation
        req["mirror"] = obj.get("mirror", False)
        if not isinstance(req["mirror"], bool):
            raise BadRequest("field 'mirror' must be a boolean")
    return req


def check_client_id(obj: dict[str, Any]) -> int | str | None:
    """The client's request id: an int or a short string (echoed back verbatim)."""
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        raise BadRequest("field 'id' must be an integer or a string")
    if isinstance(rid, str) and len(rid) > 256:
        raise MessageTooLarge("field 'id' is longer than 256 characters")
    return rid


def _string(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field '{key}' is required and must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"field '{key}' is longer than {limit} characters")
    return value


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{key}' is required and must be an integer")
    if not lo <= value <= hi:
        raise OutOfRange(f"field '{key}' must be between {lo} and {hi}")
    return value
