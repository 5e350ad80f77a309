"""``tilerouter serve`` as a child process: free ports, readiness, orderly stop.

The child runs in its own session (process group), so a Ctrl-C in the terminal reaches
only the benchmark, which then stops the server with SIGINT (the server's supervisor
stops router, workers and gateway) and kills the whole group if that takes too long.
The child also gets SIGINT if the benchmark process dies outright (PR_SET_PDEATHSIG).
Its settings come from the command line only: ``TILEROUTER_*`` variables of the
benchmark's environment are not passed on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any

from config.lists import parse_cpu_list
from config.settings import Settings

from .procs import free_port, spawn, stop_group

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVE_MODULE = "workers.serve"  # ``python -m SERVE_MODULE serve`` = ``tilerouter serve``


class ServerError(RuntimeError):
    """The server did not come up (its log tail is in the message)."""


@dataclass(frozen=True)
class ServerOptions:
    """What one configuration passes to ``tilerouter serve`` (None = server default)."""

    slides: str
    workers: int
    policy: str | None = None
    worker_cpus: str | None = None
    reader_cache_size: int | None = None
    tile_cache_bytes: int | None = None
    gateway_cache_bytes: int | None = None
    open_latency: float | None = None
    log_level: str | None = "WARNING"
    extra: tuple[tuple[str, str], ...] = ()  # any other setting: (name, value)
    args: tuple[str, ...] = ()  # flags passed as they are, after all the others

    def flags(self) -> list[str]:
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self)
                 if f.name not in ("extra", "args")]
        return [*(arg for name, value in [*pairs, *self.extra] if value is not None
                  for arg in ("--" + name.replace("_", "-"), str(value))), *self.args]

    @property
    def worker_count(self) -> int:
        """Workers the server starts (as Settings.worker_count: 0 = one per worker CPU)."""
        cpus = parse_cpu_list(self.worker_cpus or "")
        return self.workers or len(cpus) or os.cpu_count() or 1


def supported_setting(name: str) -> bool:
    """Whether this checkout's Settings has ``name`` (e.g. gateway_cache_bytes)."""
    return name in {f.name for f in fields(Settings)}


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
        return [sys.executable, "-m", SERVE_MODULE, "serve", "--port", str(self.port),
                "--stats-port", str(self.stats_port), *self.options.flags()]

    def start(self) -> None:
        argv = self.argv()
        log.info("starting: %s", " ".join(argv[1:]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILEROUTER_")}
        self.proc = spawn(argv, self.log_path, env=env, cwd=REPO)

    def wait_ready(self) -> None:
        """Until /healthz answers and every worker has registered with the router."""
        deadline = time.monotonic() + self.ready_timeout
        want = self.options.worker_count
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
        if proc is not None:
            stop_group(proc, signal.SIGINT, self.stop_timeout, "server")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self.log_path) - chars))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

