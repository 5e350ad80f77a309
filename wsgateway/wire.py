"""Client-facing encodings: the websocket binary tile frame and HTTP error statuses."""

from __future__ import annotations

import json
import struct
from typing import Any

from router.protocol import Payload

HTTP_STATUS = {
    "bad_request": 400, "unknown_op": 400, "too_large": 413, "forbidden": 403,
    "unauthorized": 401, "not_found": 404, "out_of_range": 404, "bad_slide": 422,
    "busy": 503, "rate_limited": 429, "timeout": 504, "unavailable": 503, "worker_lost": 502,
    "quarantined": 503, "protocol": 502, "internal": 500,
}


def binary_frame(header: dict[str, Any], payload: Payload | None) -> bytes:
    """4-byte big-endian header length, UTF-8 JSON header, then the image bytes."""
    head = json.dumps(header, separators=(",", ":")).encode()
    body = b"" if payload is None else payload
    return b"".join((struct.pack(">I", len(head)), head, memoryview(body)))


def error_body(rid: Any, code: str, message: str, request_id: str | None = None) -> str:
    """A websocket error reply; ``request_id`` names the request in the server's logs."""
    error = {"code": code, "message": message}
    if request_id:
        error["request_id"] = request_id
    return json.dumps({"id": rid, "ok": False, "error": error})


def http_error_body(code: str, message: str, request_id: str | None = None) -> str:
    """The JSON body of every HTTP error response (no id: one request per response)."""
    error = {"code": code, "message": message}
    if request_id:
        error["request_id"] = request_id
    return json.dumps({"ok": False, "error": error})


def http_status(code: str) -> int:
    return HTTP_STATUS.get(code, 500)
