"""Logging set-up, called only by entry points (library code just uses getLogger), and
the request id that ties every log line about one request together.

A request id is made once, at the gateway (or taken from the client: the websocket
``request_id`` field, HTTP ``X-Request-Id``), travels in the router REQUEST header to the
worker, comes back in error replies (``error.request_id``), and is held in
``REQUEST_ID`` (a context variable: per asyncio task in the gateway, per request on the
worker's thread) while that request is handled, so that every log line written meanwhile
carries it without passing it through every call.

``--log-format json`` writes one JSON object per line (time, level, component, pid,
logger, message, request_id when there is one, exc_info with a traceback) for log
shippers; the default stays one human-readable line.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from contextvars import ContextVar
from typing import Any

LOG_FORMATS = ("text", "json")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PREFIX = os.urandom(4).hex()  # ids made by different processes never collide
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A fresh id, unique across processes (a random per-process prefix and a counter:
    a uuid4 per request cost ten times as much on the gateway's hot path)."""
    return f"{_PREFIX}-{next(_COUNTER):x}"


def request_id_from(value: Any) -> str | None:
    """A caller-supplied id if it is a short token (letters, digits, ``._:-``), else None:
    an id lands in logs, so nothing else (newlines, quotes, long strings) is taken."""
    if isinstance(value, str) and _VALID_ID.fullmatch(value):
        return value
    return None


class _RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``extra={"request_id": ...}`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.request_id = rid
        record.request_suffix = f" [request {rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            obj["request_id"] = rid
        if record.exc_info:
            obj["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc_info"] = record.exc_text
        return json.dumps(obj, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", component: str = "tilerouter",
                  log_format: str = "text") -> None:
    """Root logging for one process: human-readable lines (default) or JSON lines."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {component}[%(process)d] %(name)s: "
            "%(message)s%(request_suffix)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])
