"""``tilerouter tile`` and ``tilerouter info``: one tile or one slide's description,
without a server.

Rendered by the same reader code the workers use (``readers.factory.ReaderFactory``:
same stores, passthrough, decoded-tile rendering and settings), so a tile that looks
wrong in the viewer can be reproduced, and compared byte for byte, on the command line.
With ``--via URL`` the same request goes through a running gateway instead (its HTTP
DeepZoom and info routes), which tells a rendering problem from a serving one.

Every error code maps to its own exit status (``EXIT_STATUS``; README "Command line"),
so scripts can tell a missing slide from a server that is down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from config.errors import BadRequest, ConfigError, TileRouterError, Unavailable, error_from_wire
from config.settings import FORMATS, Settings, add_arguments, load_settings
from readers.factory import ReaderFactory
from readers.slide_ids import normalize_slide_path

COMMANDS = ("tile", "info")
# exit status per error code (0 = ok; 2 = usage or settings, as argparse)
EXIT_STATUS: dict[str, int] = {
    "internal": 1, "protocol": 1,
    "config": 2,
    "bad_request": 3, "unknown_op": 3, "too_large": 3,
    "not_found": 4,
    "out_of_range": 5,
    "forbidden": 6,
    "unauthorized": 7,
    "bad_slide": 8,
    "busy": 9, "rate_limited": 9, "quarantined": 9,
    "timeout": 10,
    "unavailable": 11,
    "worker_lost": 12,
}
VIA_TIMEOUT = 60.0  # seconds for one HTTP request to the gateway
_OWN_OPTIONS = ("command", "slide", "level", "col", "row", "output", "via", "token", "format")


def add_subcommands(sub: Any) -> None:
    """The ``tile`` and ``info`` subcommands of ``tilerouter`` (workers/serve.py)."""
    tile = sub.add_parser("tile", help="render one DeepZoom tile (no server needed)")
    tile.add_argument("slide", help="slide id, as in the viewer (relative to --slides)")
    for name in ("level", "col", "row"):
        tile.add_argument(name, type=int)
    tile.add_argument("--format", choices=FORMATS, default=None,
                      help="jpeg or png (default: the tile_format setting)")
    info = sub.add_parser("info", help="describe one slide as JSON (no server needed)")
    info.add_argument("slide", help="slide id, as in the viewer (relative to --slides)")
    for p in (tile, info):
        p.add_argument("-o", "--output", help="write it here (default: stdout)")
        p.add_argument("--via", metavar="URL",
                       help="ask a running gateway (http(s)://host:port) instead")
        p.add_argument("--token", default=os.environ.get("TILEROUTER_TOKEN"),
                       help="bearer token for --via (default: $TILEROUTER_TOKEN)")
        add_arguments(p)


def run(ns: argparse.Namespace) -> int:
    """Run ``tile`` or ``info``; returns the exit status (message on stderr)."""
    try:
        settings = load_settings({k: v for k, v in vars(ns).items() if k not in _OWN_OPTIONS})
        if ns.command == "tile":
            fmt = ns.format or settings.tile_format
            data = (_via(ns.via, _tile_path(ns.slide, ns.level, ns.col, ns.row, fmt), ns.token)
                    if ns.via else local_tile(settings, ns.slide, ns.level, ns.col, ns.row,
                                              fmt))
            _write(data, ns.output)
        else:
            info = (json.loads(_via(ns.via, "/info/" + _quote(ns.slide), ns.token))
                    if ns.via else local_info(settings, ns.slide))
            _write((json.dumps(info, indent=2, sort_keys=True) + "\n").encode(), ns.output)
    except TileRouterError as exc:
        sys.stderr.write(f"tilerouter {ns.command}: {exc.code}: {exc.message}\n")
        return EXIT_STATUS.get(exc.code, 1)
    except Exception as exc:  # a reader bug: still one line and a status, not a traceback
        sys.stderr.write(f"tilerouter {ns.command}: internal: {type(exc).__name__}: {exc}\n")
        return EXIT_STATUS["internal"]
    return 0


def local_tile(settings: Settings, slide: str, level: int, col: int, row: int,
               fmt: str) -> bytes:
    """The tile a worker would render for these settings (without its caches)."""
    if min(level, col, row) < 0:
        raise BadRequest("level, col and row must be >= 0")
    factory = ReaderFactory(settings)
    reader = factory.open(normalize_slide_path(slide))
    try:
        return reader.tile(level, col, row, fmt, settings.tile_quality)
    finally:
        reader.close()


def local_info(settings: Settings, slide: str) -> dict[str, Any]:
    """What the ``info`` op answers for ``slide``."""
    reader = ReaderFactory(settings).open(normalize_slide_path(slide))
    try:
        return reader.describe()
    finally:
        reader.close()


def _quote(slide: str) -> str:
    return urllib.parse.quote(slide, safe="/")


def _tile_path(slide: str, level: int, col: int, row: int, fmt: str) -> str:
    if min(level, col, row) < 0:
        raise BadRequest("level, col and row must be >= 0")
    return f"/dz/{_quote(slide)}_files/{level}/{col}_{row}.{fmt}"


def _via(base: str, path: str, token: str | None) -> bytes:
    """GET ``base + path`` from a gateway; its JSON error becomes the TileRouterError."""
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"--via must be an http(s):// URL, got {base[:80]!r}")
    request = urllib.request.Request(base.rstrip("/") + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=VIA_TIMEOUT) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        try:
            error = json.loads(err.read()).get("error") or {}
        except (ValueError, AttributeError):
            error = {"code": "internal", "message": f"HTTP {err.code} without a JSON error"}
        rid = error.get("request_id")
        exc = error_from_wire(error)
        raise type(exc)(f"{exc.message}" + (f" (request id {rid})" if rid else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"cannot reach the gateway: {reason}") from None


def _write(data: bytes, output: str | None) -> None:
    if output:
        with open(output, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
