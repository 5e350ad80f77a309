"""``tilerouter serve`` as a child process: free ports, readiness, orderly stop.

The child runs in its own session (process group), so a Ctrl-C in the terminal reaches
only the benchmark, which then stops the server with SIGINT (the server's supervisor
stops router, workers and gateway) and kills the whole group if that takes too long.
The child also gets SIGINT if the benchmark process dies outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any

from config.settings import Settings

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The server did not come up (its log tail is in the message)."""


@dataclass(frozen=True)
class ServerOptions:
    """What one configuration passes to ``tilerouter serve`` (None = server default)."""

    slides: str
    workers: int
    policy: str
    reader_cache_size: int | None = None
    tile_cache_bytes: int | None = None
    gateway_cache_bytes: int | None = None
    open_latency: float | None = None
    log_level: str = "WARNING"
    extra: tuple[tuple[str, str], ...] = ()  # any other setting: (name, value)

    def flags(self) -> list[str]:
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "extra"]
        return [arg for name, value in [*pairs, *self.extra] if value is not None
                for arg in ("--" + name.replace("_", "-"), str(value))]


def supported_setting(name: str) -> bool:
    """Whether this checkout's Settings has ``name`` (e.g. gateway_cache_bytes)."""
    return name in {f.name for f in fields(Settings)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class ServerProcess:
    """Context manager: ``with ServerProcess(opts, log_path) as srv: srv.base_url ...``."""

    def __init__(self, options: ServerOptions, log_path: str, ready_timeout: float = 60.0,
                 stop_timeout: float = 20.0) -> None:
        self.options = options
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = free_port()
        self.stats_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pgid(self) -> int:
        """The server's own process group (it leads a new session)."""
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "wsgateway.serve", "serve", "--port", str(self.port),
                "--stats-port", str(self.stats_port), *self.options.flags()]

    def start(self) -> None:
        argv = self.argv()
        log.info("starting: %s", " ".join(argv[1:]))
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)

    def wait_ready(self) -> None:
        """Until /healthz answers and every worker has registered with the router."""
        deadline = time.monotonic() + self.ready_timeout
        want = self.options.workers
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, ValueError):
                if get_json(self.base_url + "/healthz", 2).get("ok"):
                    registered = len(self.stats().get("workers", []))
                    if registered >= want:
                        return
            time.sleep(0.1)
        raise ServerError(f"server not ready in {self.ready_timeout:.0f}s\n{self.log_tail()}")

    def _check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ServerError(f"server exited with {code} during start\n{self.log_tail()}")

    def stats(self) -> dict[str, Any]:
        return dict(get_json(self.base_url + "/stats"))

    def stop(self) -> None:
        """SIGINT, wait, then SIGKILL the whole process group; a second Ctrl-C kills now."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("server pid %d still running %.0fs after SIGINT; killing its group",
                        proc.pid, self.stop_timeout)
        except KeyboardInterrupt:
            log.warning("interrupted while stopping; killing server group %d", proc.pid)
        finally:
            _kill_group(proc)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self.log_path) - chars))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left in the server's own process group, then reap the server."""
    try:
        os.killpg(proc.pid, 0)  # raises if nothing is left in the group
    except (ProcessLookupError, PermissionError):
        proc.wait()
        return
    if proc.poll() is not None:
        log.warning("server exited but left processes in group %d; killing them", proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
