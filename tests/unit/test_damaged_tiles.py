"""A stored JPEG tile whose entropy-coded data is damaged but still parses: libjpeg only
warns, Pillow decodes garbage without a word, OpenSlide reports the warning as an error.
Every path that decodes must answer bad_slide for it (readers/stored_levels.py vets stored
tiles through OpenSlide), the tiles around it must still be right, and passthrough (which
does not decode) serves the file's own bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from config.errors import BadSlide
from config.settings import Settings
from readers.base import RegionRequest
from readers.demo_slide import write_demo_slide
from readers.encode import encode_image
from readers.openslide_reader import OpenSlideReader
from readers.passthrough import standalone_jpeg, stored_level, tiled_pages
from readers.region import render_region
from readers.stored_levels import DecodedTiles
from workers.handler import RequestHandler

Q = 75
NAME = "damaged.tiff"
BAD = (1, 1)  # the damaged stored tile of level 0 (col, row): level-0 pixels 256..511
# top-level 254/1 DeepZoom tiles that do not touch it (cols/rows 1 and 2 do)
NEIGHBOURS = [(0, 0), (1, 0), (3, 0), (0, 1), (3, 1), (0, 3), (1, 3), (3, 3), (4, 2)]


def flip_entropy_bytes(data: bytes, count: int = 40, seed: int = 3) -> bytes:
    """One bit flipped in each of ``count`` bytes from the middle of the scan data, never
    making or breaking a 0xFF (so no marker appears: the stream still parses)."""
    out = bytearray(data)
    sos = out.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(out[sos + 2:sos + 4], "big")
    rng = np.random.default_rng(seed)
    pos, flipped = (start + len(out)) // 2, 0
    while flipped < count:
        byte = out[pos] ^ (1 << int(rng.integers(0, 8)))
        if 0xFF not in (out[pos], out[pos - 1], byte):
            out[pos] = byte
            flipped += 1
        pos += 1
    return bytes(out)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """(slide, the damaged stored tile's bytes as stored) in a slide root of its own."""
    root = tmp_path_factory.mktemp("damaged")
    path = root / NAME
    write_demo_slide(path, 2048, 1536, seed=7)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        i = BAD[1] * math.ceil(page.imagewidth / page.tilewidth) + BAD[0]
        offset, count = page.dataoffsets[i], page.databytecounts[i]
        lv = stored_level(tiled_pages(tif), (page.imagewidth, page.imagelength), None)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        bad = flip_entropy_bytes(fh.read(count))
        fh.seek(offset)
        fh.write(bad)
    # the premise: OpenSlide reports libjpeg's warning, Pillow decodes without complaint
    slide = openslide.OpenSlide(str(path))
    with pytest.raises(openslide.OpenSlideError, match="Corrupt JPEG data"):
        slide.read_region((256 * BAD[0] + 9, 256 * BAD[1] + 9), 0, (4, 4))
    slide.close()
    assert lv is not None
    jpeg = standalone_jpeg(bad, lv, 256)
    assert jpeg is not None
    Image.open(io.BytesIO(jpeg)).load()
    return path, bad


def expected_tile(path: Path, level: int, col: int, row: int, size: int = 254,
                  overlap: int = 1) -> bytes:
    """OpenSlide's DeepZoom tile, encoded as every render path encodes (a fresh handle:
    one that has read the damaged tile stays in error)."""
    with openslide.OpenSlide(str(path)) as slide:
        dz = DeepZoomGenerator(slide, size, overlap, True)
        return encode_image(dz.get_tile(level, (col, row)), "jpeg", Q)


def test_reader_reports_the_damage_instead_of_pixels(damaged: tuple[Path, bytes]) -> None:
    path, _ = damaged
    for col, row in [(1, 1), (2, 1), (1, 2), (2, 2)]:  # each touches the damaged tile
        r = OpenSlideReader(str(path), passthrough=False, decoded=DecodedTiles(8 << 20))
        try:
            top = r.describe()["dz_levels"] - 1
            with pytest.raises(BadSlide, match="Corrupt JPEG data"):
                r.tile(top, col, row, "jpeg", Q)
        finally:
            r.close()


def test_worker_answers_bad_slide_and_serves_the_neighbours(
        damaged: tuple[Path, bytes]) -> None:
    path, _ = damaged
    handler = RequestHandler(Settings(slides=str(path.parent)))
    try:
        top = handler.readers.get(NAME).describe()["dz_levels"] - 1

        def ask(col: int, row: int, level: int = top) -> tuple[dict, bytes | None]:
            return handler.safe_handle(
                {"op": "tile", "slide": NAME, "level": level, "col": col, "row": row})

        for attempt in range(2):  # the reader is dropped and reopened: still refused
            header, data = ask(*BAD)
            assert header["ok"] is False and header["error"]["code"] == "bad_slide", header
            assert "Corrupt JPEG data" in header["error"]["message"]
            assert data is None
            for col, row in NEIGHBOURS:
                header, data = ask(col, row)
                assert header["ok"] is True, (attempt, col, row, header)
                assert data == expected_tile(path, top, col, row), (col, row)
        assert handler.readers.get(NAME).stored_reads > 0  # cut from stored tiles
        # the half-resolution level is stored separately and intact
        header, data = ask(0, 0, top - 1)
        assert header["ok"] is True and data == expected_tile(path, top - 1, 0, 0)
    finally:
        handler.close()


def test_iiif_regions_over_the_damaged_tile_are_bad_slide(
        damaged: tuple[Path, bytes]) -> None:
    path, _ = damaged
    handler = RequestHandler(Settings(slides=str(path.parent)))

    def region(x: int, y: int, w: int, h: int, ow: int, oh: int) -> tuple[dict, bytes | None]:
        return handler.safe_handle({
            "op": "region", "slide": NAME, "x": x, "y": y, "w": w, "h": h, "out_w": ow,
            "out_h": oh, "format": "jpeg", "quality": "default", "rotation": 0.0,
            "mirror": False})

    try:
        header, _ = region(200, 200, 300, 300, 300, 300)  # level 0, across the damage
        assert header["ok"] is False and header["error"]["code"] == "bad_slide", header
        header, data = region(1024, 0, 512, 512, 512, 512)  # level 0, clean tiles
        assert header["ok"] is True and header["level"] == 0
        with openslide.OpenSlide(str(path)) as slide:
            expected, _, _ = render_region(slide, RegionRequest(1024, 0, 512, 512, 512, 512),
                                           4096 * 4096, Q)
        assert data == expected
        header, _ = region(0, 0, 2048, 1536, 256, 192)  # a thumbnail: a clean level
        assert header["ok"] is True and header["level"] > 0
    finally:
        handler.close()


def test_passthrough_serves_the_stored_bytes_as_is(damaged: tuple[Path, bytes]) -> None:
    """Passthrough never decodes: the damaged tile goes out as the file holds it (the
    client's decoder sees exactly what is stored); rendering the same tile is bad_slide."""
    path, bad = damaged
    entropy = bad[bad.index(b"\xff\xda"):]
    for passthrough in (True, False):
        handler = RequestHandler(Settings(slides=str(path.parent), tile_size=256, overlap=0,
                                          passthrough=passthrough))
        try:
            top = handler.readers.get(NAME).describe()["dz_levels"] - 1
            header, data = handler.safe_handle(
                {"op": "tile", "slide": NAME, "level": top, "col": BAD[0], "row": BAD[1]})
            if passthrough:
                assert header["ok"] is True and data is not None and data.endswith(entropy)
            else:
                assert header["ok"] is False and header["error"]["code"] == "bad_slide"
            header, data = handler.safe_handle(
                {"op": "tile", "slide": NAME, "level": top, "col": 3, "row": 3})
            assert header["ok"] is True
            if not passthrough:
                assert data == expected_tile(path, top, 3, 3, 256, 0)
        finally:
            handler.close()


def test_clean_stored_tiles_keep_the_fast_path(tmp_path: Path) -> None:
    """Strict decoding refuses damage, not clean tiles: they are still cut from stored
    tiles (not through OpenSlide), byte-identical to DeepZoomGenerator's."""
    path = Path(write_demo_slide(tmp_path / "clean.tiff", 1024, 1024, seed=2))
    r = OpenSlideReader(str(path), passthrough=False, decoded=DecodedTiles(8 << 20))
    try:
        top = r.describe()["dz_levels"] - 1
        for col, row in [(1, 1), (2, 1)]:
            assert r.tile(top, col, row, "jpeg", Q) == expected_tile(path, top, col, row)
        assert r.stored_reads == 2
    finally:
        r.close()
