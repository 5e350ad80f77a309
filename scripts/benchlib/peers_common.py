"""What every part of scripts/bench_peers.py shares: progress lines, constants, geometry."""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .server import REPO

PEERS_DIR = os.path.join(REPO, "scripts", "peers")  # walk.lua, lighttpd.conf.in, wsdrive.py
QUALITY = 75
IIP_PROCS = 2
WORKERS = 2
# "the cores the workers use": workers pinned to their own CPUs against OpenSlide on those
OWN_CORES_SERVER = "tilerouter (workers on own cores)"
OWN_CORES_RAW = "OpenSlide in-process (the workers' cores)"
T0 = time.monotonic()

log = logging.getLogger("bench_peers")


class _Elapsed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{time.monotonic() - T0:7.1f}s] {super().format(record)}"


def setup_logging() -> None:
    """Progress lines (this script's and benchlib's) on stderr, seconds since the start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Elapsed("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def say(msg: str) -> None:
    log.info(msg)


class BenchError(RuntimeError):
    pass


Tile = tuple[str, int, int, int]  # slide name, level, col, row


@dataclass(frozen=True)
class Geometry:
    tile_size: int
    overlap: int

    @property
    def label(self) -> str:
        return f"{self.tile_size}/{self.overlap}"


DZ = Geometry(254, 1)
NATIVE = Geometry(256, 0)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes, str]:
    """(status, body, content type); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")
    except OSError as exc:
        return 0, str(exc).encode(), ""
