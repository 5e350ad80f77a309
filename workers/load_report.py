"""A worker's load, told to the launcher that started it (elastic pools: workers/elastic.py).

No coordination service: the launcher hands each worker the write end of a pipe (its fd
number in ``TILEROUTER_LOAD_REPORT_FD``) and the worker writes one short JSON line a few
times a second: its requests in flight, how long it has been idle, and what its routers'
heartbeats said about their wait queues (router/waiting.py ``pressure``). A line is far
below PIPE_BUF, so it arrives whole; the launcher keeps only the newest. A worker started
by hand has no pipe and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

ENV = "TILEROUTER_LOAD_REPORT_FD"
MAX_READS = 16  # reads of one pipe per poll (64 KiB each): bounded even if a worker floods


def reported_number(value: Any) -> float:
    """A count or a duration from a report (a router's heartbeat, a worker's line): a
    non-negative number, else 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return float(value) if ok else 0.0


class LoadReport:
    """Worker side: routers' pressure in (main thread), one line out (heartbeat thread)."""

    def __init__(self, fd: int | None, stale_after: float) -> None:
        self.fd = fd
        self.stale_after = stale_after
        self._routers: dict[str, tuple[int, float, float]] = {}  # waiting, oldest, when
        self._lock = threading.Lock()
        self._busy_at = time.monotonic()
        self._served = -1
        if fd is not None:
            os.set_blocking(fd, False)  # a launcher that stops reading must not stall us

    @classmethod
    def from_env(cls, stale_after: float) -> LoadReport:
        raw = os.environ.get(ENV, "")
        return cls(int(raw) if raw.isdigit() else None, stale_after)

    def router_said(self, endpoint: str, header: dict[str, Any]) -> None:
        """A router's heartbeat: how many requests wait there, the oldest one's wait."""
        if self.fd is None:
            return
        waiting = int(reported_number(header.get("waiting")))
        with self._lock:
            self._routers[endpoint] = (waiting, reported_number(header.get("oldest")),
                                       time.monotonic())

    def write(self, load: int, served: int) -> None:
        """One line for the launcher; ``served`` moving counts as busy even when every
        request came and went between two reports."""
        if self.fd is None:
            return
        now = time.monotonic()
        if load > 0 or served != self._served:
            self._busy_at = now
        self._served = served
        with self._lock:
            fresh = [r for r in self._routers.values() if now - r[2] <= self.stale_after]
        worst = max(fresh, key=lambda r: r[1], default=(0, 0.0, now))
        # "heard": how old the worst router's word is (a long render delays reading it)
        line = json.dumps({"load": load, "idle": round(now - self._busy_at, 3),
                           "waiting": sum(r[0] for r in fresh), "oldest": worst[1],
                           "heard": round(now - worst[2], 3)})
        try:
            os.write(self.fd, line.encode() + b"\n")
        except BlockingIOError:
            pass  # the launcher is behind: it only wants the newest line anyway
        except OSError as exc:  # launcher gone: nobody to tell
            log.debug("load report pipe closed: %s", exc)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class LoadChannel:
    """Launcher side: the pipe of one worker child, reopened at every (re)start."""

    def __init__(self) -> None:
        self._read: int | None = None
        self._write: int | None = None
        self._buffer = b""
        self.last: dict[str, Any] | None = None  # the newest line, None until one came
        self.at = 0.0  # when it was read (monotonic)

    def open(self) -> dict[str, str]:
        """A fresh pipe; the environment that tells the child its write end."""
        self.close()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        return {ENV: str(self._write)}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self._write is None else (self._write,)

    def close_writer(self) -> None:
        """After the child started (it holds its own copy), so EOF means it is gone."""
        if self._write is not None:
            with contextlib.suppress(OSError):
                os.close(self._write)
            self._write = None

    def close(self) -> None:
        self.close_writer()
        if self._read is not None:
            with contextlib.suppress(OSError):
                os.close(self._read)
            self._read = None
        self._buffer = b""
        self.last = None

    def read(self, now: float) -> None:
        """Take what arrived; keep the newest complete line."""
        if self._read is None:
            return
        for _ in range(MAX_READS):
            try:
                chunk = os.read(self._read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self._buffer = self._buffer[-4096:]  # a line never gets longer than this
        for raw in reversed(lines):
            try:
                report = json.loads(raw)
            except ValueError:
                continue
            if isinstance(report, dict):
                self.last, self.at = report, now
                return
