"""RequestHandler on a real slide root: caching, info/list, and errors mapped to wire codes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from config.errors import ConfigError
from config.settings import Settings
from workers.handler import RequestHandler


@pytest.fixture
def handler(unit_root: Path) -> Iterator[RequestHandler]:
    h = RequestHandler(Settings(slides=str(unit_root)))
    yield h
    h.close()


def _tile(slide: str, level: int = 11, col: int = 0, row: int = 0, **extra: object) -> dict:
    return {"op": "tile", "slide": slide, "level": level, "col": col, "row": row, **extra}


def test_tile_then_cache_hit(handler: RequestHandler) -> None:
    """The second identical request is served from the tile cache, marked cached."""
    header, data = handler.safe_handle(_tile("a.tiff", 11, 2, 1))
    assert header == {"ok": True, "mime": "image/jpeg"}
    assert data is not None and Image.open(io.BytesIO(data)).format == "JPEG"
    header2, data2 = handler.safe_handle(_tile("a.tiff", 11, 2, 1, rid=5))
    assert header2 == {"ok": True, "mime": "image/jpeg", "cached": True}
    assert data2 == data
    assert (handler.tiles.hits, handler.tiles.misses) == (1, 1)
    assert handler.readers.opens == 1


def test_png_and_jpeg_are_cached_separately(handler: RequestHandler) -> None:
    jpeg = handler.handle(_tile("a.tiff"))
    png = handler.handle(_tile("a.tiff", format="png"))
    assert png[0] == {"ok": True, "mime": "image/png"} and "cached" not in png[0]
    assert png[1] != jpeg[1] and png[1] is not None and png[1].startswith(b"\x89PNG")


def test_info(handler: RequestHandler) -> None:
    header, data = handler.safe_handle({"op": "info", "slide": "a.tiff"})
    assert data is None and header["ok"] is True
    assert (header["slide"], header["width"], header["height"]) == ("a.tiff", 1500, 1000)
    assert header["dz_levels"] == 12 and header["tile_size"] == 254
    assert "a.tiff" in handler.readers


def test_list(handler: RequestHandler) -> None:
    header, data = handler.safe_handle({"op": "list"})
    assert data is None and header["ok"] is True
    paths = {s["path"] for s in header["slides"]}
    assert {"a.tiff", "sub/b.tiff", "notaslide.tiff", "truncated.tiff"} <= paths
    assert "escape.tiff" not in paths  # symlink leaving the root


def test_associated_thumbnail(handler: RequestHandler) -> None:
    header, data = handler.safe_handle(
        {"op": "associated", "slide": "sub/b.tiff", "name": "thumbnail", "size": 64})
    assert header == {"ok": True, "mime": "image/jpeg", "name": "thumbnail"}
    assert data is not None and max(Image.open(io.BytesIO(data)).size) == 64


@pytest.mark.parametrize("slide", ["../outside.tiff", "escape.tiff", "/etc/passwd", "a\\b"])
def test_outside_root_is_forbidden(handler: RequestHandler, slide: str) -> None:
    """Both syntactic escapes and a symlink to a real slide outside the root are refused."""
    header, data = handler.safe_handle({"op": "info", "slide": slide})
    assert data is None and header["ok"] is False
    assert header["error"]["code"] == "forbidden" and header["error"]["message"]
    assert len(handler.readers) == 0


def test_missing_slide_not_found(handler: RequestHandler) -> None:
    header, _ = handler.safe_handle(_tile("nope.tiff"))
    assert header["ok"] is False and header["error"]["code"] == "not_found"


@pytest.mark.parametrize("op", ["tile", "info"])
def test_text_file_is_bad_slide(handler: RequestHandler, op: str) -> None:
    req = _tile("notaslide.tiff") if op == "tile" else {"op": "info", "slide": "notaslide.tiff"}
    header, _ = handler.safe_handle(req)
    assert header["ok"] is False and header["error"]["code"] == "bad_slide"
    assert "notaslide.tiff" not in handler.readers


def test_truncated_slide_is_bad_slide_and_dropped(handler: RequestHandler) -> None:
    """A reader that failed on a read is closed and forgotten, so the next request reopens."""
    for attempt in (1, 2):
        header, data = handler.safe_handle(_tile("truncated.tiff", level=0))
        assert data is None and header["ok"] is False
        assert header["error"]["code"] == "bad_slide"
        assert "truncated.tiff" not in handler.readers and len(handler.readers) == 0
        assert len(handler.tiles) == 0
        assert handler.readers.opens == attempt  # it did open (lazily), then was dropped


def test_out_of_range_and_bad_request_codes(handler: RequestHandler) -> None:
    header, _ = handler.safe_handle(_tile("a.tiff", level=12))
    assert header["error"]["code"] == "out_of_range"
    assert "a.tiff" in handler.readers  # a client error must not drop a good reader
    header, _ = handler.safe_handle({"op": "tile", "slide": "a.tiff"})
    assert header["error"]["code"] == "bad_request"
    header, _ = handler.safe_handle({"op": "explode"})
    assert header["error"]["code"] == "unknown_op"


def test_on_slides_changed_callback(unit_root: Path) -> None:
    """The worker re-reports its open slides to the router whenever the set changes."""
    calls: list[int] = []
    h = RequestHandler(Settings(slides=str(unit_root), reader_cache_size=1),
                       on_slides_changed=lambda: calls.append(1))
    try:
        h.handle({"op": "info", "slide": "a.tiff"})
        h.handle({"op": "info", "slide": "a.tiff"})
        assert len(calls) == 1
        h.handle({"op": "info", "slide": "sub/b.tiff"})  # evicts a.tiff, opens b
        assert len(calls) == 3 and h.readers.slides() == ["sub/b.tiff"]
    finally:
        h.close()


def test_list_pages_and_filters_by_folder(handler: RequestHandler) -> None:
    whole = handler.handle({"op": "list"})[0]
    paths = [s["path"] for s in whole["slides"]]
    assert whole["total"] == len(paths) >= 3 and "next" not in whole
    first = handler.handle({"op": "list", "offset": 0, "limit": 2})[0]
    assert [s["path"] for s in first["slides"]] == paths[:2] and first["next"] == 2
    rest = handler.handle({"op": "list", "offset": 2, "limit": 10000})[0]
    assert [s["path"] for s in rest["slides"]] == paths[2:] and "next" not in rest
    folder = paths[-1].rsplit("/", 1)[0] + "/" if "/" in paths[-1] else paths[-1]
    sub = handler.handle({"op": "list", "prefix": folder})[0]
    assert sub["slides"] and all(s["path"].startswith(folder) for s in sub["slides"])


def test_bench_tiles_by_position_shares_tiles_across_slide_ids(unit_root: Path) -> None:
    """The benchmark knob: a tile of another slide id at the same position is a cache hit
    (one render for every copy of a slide); without it the slide is part of the key."""
    h = RequestHandler(Settings(slides=str(unit_root), bench_tiles_by_position=True))
    try:
        first, data = h.safe_handle(_tile("a.tiff", 9, 0, 0))
        again, same = h.safe_handle(_tile("sub/b.tiff", 9, 0, 0))
        assert "cached" not in first and again.get("cached") is True and same == data
        assert h.readers.opens == 1
    finally:
        h.close()
    with pytest.raises(ConfigError, match="bench_tiles_by_position"):
        Settings(bench_tiles_by_position=True, tile_cache_bytes=0)
