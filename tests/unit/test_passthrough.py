"""Stored-tile passthrough on real generated slides: exact stored bytes where the stored tile
*is* the DeepZoom tile, DeepZoomGenerator output everywhere else.

Pixel checks compare Pillow's decode of the passed-through bytes with
``DeepZoomGenerator.get_tile`` exactly: both decode the same JPEG with libjpeg-turbo at its
defaults (islow IDCT, fancy upsampling), Pillow's 3.2 and OpenSlide's bundled 3.1 give
identical pixels. If a future libjpeg-turbo changes its IDCT or upsampling, these would
differ by a unit or two, not by a colour-space error (tens of levels).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from config.settings import Settings
from readers.demo_slide import write_demo_slide
from readers.encode import encode_image
from readers.openslide_reader import OpenSlideReader
from readers.passthrough import full_bounds
from workers.handler import RequestHandler

TS = 256
Q = 75


def _adobe(transform: int) -> bytes:
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes((transform,))


def _stored(path: Path, page_index: int, col: int, row: int) -> tuple[bytes, bytes | None]:
    """(raw tile bytes, JPEGTables) straight from tifffile's view of the IFD."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[page_index]
        i = row * math.ceil(page.imagewidth / page.tilewidth) + col
        with open(path, "rb") as fh:
            fh.seek(page.dataoffsets[i])
            return fh.read(page.databytecounts[i]), page.jpegtables


def _merged(raw: bytes, tables: bytes | None, inject: bytes = b"") -> bytes:
    """Standalone JPEG: SOI and the APPn segments right after it (a JFIF APP0 must stay
    first), [an Adobe marker], the tables minus their SOI/EOI, the rest of the tile."""
    assert raw[:2] == b"\xff\xd8"
    if tables is not None:
        assert tables[:2] == b"\xff\xd8" and tables[-2:] == b"\xff\xd9"
    pos = 2
    while 0xE0 <= raw[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(raw[pos + 2:pos + 4], "big")
    return raw[:pos] + inject + (tables[2:-2] if tables else b"") + raw[pos:]


def _pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (TS, TS)
    return np.asarray(image.convert("RGB"))


def _deepzoom(reader: OpenSlideReader) -> DeepZoomGenerator:
    """The generator a reader (made with limit_bounds) must match, on its own handle."""
    return DeepZoomGenerator(openslide.OpenSlide(reader.path), reader.tile_size,
                             reader.overlap, True)


def _rendered(reader: OpenSlideReader, level: int, col: int, row: int) -> bytes:
    return encode_image(_deepzoom(reader).get_tile(level, (col, row)), "jpeg", Q)


def _interior_tiles(path: Path, page_index: int, n: int = 3) -> list[tuple[int, int]]:
    """The n biggest (most tissue) stored tiles lying wholly inside the level."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[page_index]
        across = math.ceil(page.imagewidth / TS)
        full_cols, full_rows = page.imagewidth // TS, page.imagelength // TS
        sizes = [(count, i % across, i // across)
                 for i, count in enumerate(page.databytecounts)
                 if i % across < full_cols and i // across < full_rows]
    return [(c, r) for _, c, r in sorted(sizes, reverse=True)[:n]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3000x2200: stored levels 3000x2200, 1500x1100, 750x550, 375x275 (exact 2x each)
    return Path(write_demo_slide(tmp_path_factory.mktemp("pt") / "demo.tiff", 3000, 2200,
                                 seed=11))


@pytest.fixture
def reader(demo: Path) -> Iterator[OpenSlideReader]:
    r = OpenSlideReader(str(demo), tile_size=TS, overlap=0, limit_bounds=True)
    yield r
    r.close()


# DeepZoom level -> stored IFD for the demo slide (13 DeepZoom levels, 4 stored)
STORED = {12: 0, 11: 1, 10: 2, 9: 3}


@pytest.mark.parametrize("limit_bounds", [True, False])
def test_interior_tiles_are_the_stored_bytes(demo: Path, limit_bounds: bool) -> None:
    r = OpenSlideReader(str(demo), tile_size=TS, overlap=0, limit_bounds=limit_bounds)
    dz = DeepZoomGenerator(openslide.OpenSlide(str(demo)), TS, 0, False)
    try:
        assert dz.level_count == 13
        for dz_level, page_index in STORED.items():
            tiles = _interior_tiles(demo, page_index)
            assert tiles
            for col, row in tiles:
                raw, tables = _stored(demo, page_index, col, row)
                assert tables is None  # tifffile writes a complete JFIF JPEG per tile
                data = r.tile(dz_level, col, row, "jpeg", Q)
                assert data == _merged(raw, tables) == raw
                expected = np.asarray(dz.get_tile(dz_level, (col, row)))
                assert expected.std() > 10  # tissue, not blank background
                assert np.array_equal(_pixels(data), expected)
    finally:
        r.close()


def test_edge_tiles_fall_back_to_rendering(reader: OpenSlideReader) -> None:
    dz = _deepzoom(reader)
    for dz_level in STORED:
        cols, rows = dz.level_tiles[dz_level]
        width, height = dz.level_dimensions[dz_level]
        assert width % TS and height % TS  # every stored level has padded edge tiles
        for col, row in {(cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)}:
            assert reader.stored_tile(dz_level, col, row) is None
            data = reader.tile(dz_level, col, row, "jpeg", Q)
            assert data == _rendered(reader, dz_level, col, row)


def test_levels_not_stored_fall_back_to_rendering(reader: OpenSlideReader) -> None:
    assert [lv for lv in range(13) if reader.stored_tile(lv, 0, 0)] == sorted(STORED)
    for dz_level in (8, 7, 3, 0):
        assert reader.stored_tile(dz_level, 0, 0) is None
        assert reader.tile(dz_level, 0, 0, "jpeg", Q) == _rendered(reader, dz_level, 0, 0)


def test_png_is_rendered(reader: OpenSlideReader) -> None:
    col, row = _interior_tiles(Path(reader.path), 0, 1)[0]
    png = reader.tile(12, col, row, "png", Q)
    assert png.startswith(b"\x89PNG")
    expected = np.asarray(_deepzoom(reader).get_tile(12, (col, row)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


@pytest.mark.parametrize("kwargs", [
    {"tile_size": TS, "overlap": 1},  # overlap: never, not even the index is built
    {"tile_size": 254, "overlap": 0},  # tile size differs from the file's
    {"tile_size": 512, "overlap": 0},
    {"tile_size": TS, "overlap": 0, "passthrough": False},
])
def test_no_passthrough_without_matching_geometry(demo: Path, kwargs: dict) -> None:
    r = OpenSlideReader(str(demo), limit_bounds=True, **kwargs)
    try:
        dz_tiles = r.describe()["dz_tiles"]
        assert not any(r.stored_tile(lv, 0, 0) for lv in range(len(dz_tiles)))
        for dz_level, page_index in STORED.items():
            cols, rows = dz_tiles[dz_level]
            for col, row in _interior_tiles(demo, page_index, 2):
                if col < cols and row < rows:
                    raw, _ = _stored(demo, page_index, col, row)
                    data = r.tile(dz_level, col, row, "jpeg", Q)
                    assert data != raw
                    assert data == _rendered(r, dz_level, col, row)
    finally:
        r.close()


def test_inexact_downsample_falls_back(tmp_path: Path) -> None:
    """3001x2201: level 1 is 1501x1101, the DeepZoom level's size, but its downsample is
    1.9992, so DeepZoom resamples 257 px into 256 and the stored tile would be wrong."""
    path = Path(write_demo_slide(tmp_path / "odd.tiff", 3001, 2201, seed=4))
    r = OpenSlideReader(str(path), tile_size=TS, overlap=0)
    try:
        info = r.describe()
        assert info["level_dimensions"][1] == info["dz_dimensions"][11]
        assert [lv for lv in range(13) if r.stored_tile(lv, 0, 0)] == [12]
        col, row = _interior_tiles(path, 1, 1)[0]
        raw, _ = _stored(path, 1, col, row)
        expected = np.asarray(_deepzoom(r).get_tile(11, (col, row)))
        assert not np.array_equal(_pixels(raw), expected)
        assert r.tile(11, col, row, "jpeg", Q) == _rendered(r, 11, col, row)
        col, row = _interior_tiles(path, 0, 1)[0]
        assert r.tile(12, col, row, "jpeg", Q) == _stored(path, 0, col, row)[0]
    finally:
        r.close()


def test_bounds_properties() -> None:
    dims = (3000, 2200)
    assert full_bounds({}, dims)
    assert full_bounds({"openslide.bounds-x": "0", "openslide.bounds-y": "0",
                        "openslide.bounds-width": "3000", "openslide.bounds-height": "2200"},
                       dims)
    assert not full_bounds({"openslide.bounds-x": "16"}, dims)
    assert not full_bounds({"openslide.bounds-height": "2000"}, dims)
    assert not full_bounds({"openslide.bounds-width": "junk"}, dims)


def test_close_releases_the_file(demo: Path) -> None:
    r = OpenSlideReader(str(demo), tile_size=TS, overlap=0)
    fd = r._passthrough._fd
    os.fstat(fd)
    r.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_handler_setting(demo: Path) -> None:
    col, row = _interior_tiles(demo, 0, 1)[0]
    raw, _ = _stored(demo, 0, col, row)
    req = {"op": "tile", "slide": demo.name, "level": 12, "col": col, "row": row}
    for passthrough in (True, False):
        settings = Settings(slides=str(demo.parent), tile_size=TS, overlap=0,
                            passthrough=passthrough)
        handler = RequestHandler(settings)
        try:
            header, data = handler.handle(dict(req))
            assert header["ok"] and header["mime"] == "image/jpeg"
            assert (data == raw) is passthrough
        finally:
            handler.close()


# --- JPEGTables: abbreviated tile streams with shared tables, as Aperio writes them -------

def _segments(stream: bytes) -> tuple[list[bytes], bytes]:
    """Marker segments before SOS, and the rest (SOS, scan, EOI)."""
    out, pos = [], 2
    while stream[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(stream[pos + 2:pos + 4], "big")
        out.append(stream[pos:end])
        pos = end
    return out, stream[pos:]


def _set_ids(segments: list[bytes], scan: bytes, ids: tuple[int, int, int]
             ) -> tuple[list[bytes], bytes]:
    """Rewrite the component ids in SOF0 and SOS."""
    out = []
    for seg in segments:
        if seg[1] == 0xC0:
            seg = bytearray(seg)
            seg[10], seg[13], seg[16] = ids
            seg = bytes(seg)
        out.append(seg)
    scan = bytearray(scan)
    scan[5], scan[7], scan[9] = ids
    return out, bytes(scan)


JFIF = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"

# name: (TIFF photometric RGB?, how the tile stream is marked, Adobe marker passthrough adds
# or None if the tile must not pass through). OpenSlide decodes all of them right: it takes
# the colour space from the TIFF; tifffile and Pillow follow the stream's markers/ids.
VARIANTS = {
    # Aperio YCbCr: no JFIF, ids 1,2,3 -> every decoder reads YCbCr
    "ycbcr": (False, "plain", b""),
    # Aperio RGB: no markers, ids 0,1,2 -> a standalone decoder would read YCbCr
    "rgb-unmarked": (True, "ids012", _adobe(0)),
    # tifffile/libjpeg RGB, tables split out: Adobe transform 0 already says RGB
    "rgb-adobe": (True, "adobe", b""),
    # YCbCr data with ids 'R','G','B' and no markers: libjpeg would guess RGB
    "ycbcr-rgb-ids": (False, "idsRGB", _adobe(1)),
    # markers contradicting the TIFF: OpenSlide follows the TIFF, Pillow the marker
    "rgb-jfif": (True, "jfif", None),
    "ycbcr-adobe-rgb": (False, "adobe0", None),
}


def _encode(tile: np.ndarray, rgb: bool, how: str) -> bytes:
    if rgb:
        stream = imagecodecs.jpeg8_encode(tile, level=80, colorspace="RGB",
                                          outcolorspace="RGB", subsampling=(1, 1))
    else:
        stream = imagecodecs.jpeg8_encode(tile, level=80)
    segments, scan = _segments(stream)
    segments = [s for s in segments if s[1] not in (0xE0, 0xEE)]  # drop JFIF / Adobe
    if how == "ids012":
        segments, scan = _set_ids(segments, scan, (0, 1, 2))
    elif how == "idsRGB":
        segments, scan = _set_ids(segments, scan, (0x52, 0x47, 0x42))
    elif how == "jfif":
        segments, scan = _set_ids(segments, scan, (1, 2, 3))
    head = {"adobe": _adobe(0), "adobe0": _adobe(0), "jfif": JFIF}.get(how, b"")
    return b"\xff\xd8" + head + b"".join(segments) + scan


def _split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """(JPEGTables, abbreviated stream) from a complete JPEG."""
    segments, scan = _segments(stream)
    tables = [s for s in segments if s[1] in (0xDB, 0xC4)]
    rest = [s for s in segments if s[1] not in (0xDB, 0xC4)]
    return b"\xff\xd8" + b"".join(tables) + b"\xff\xd9", b"\xff\xd8" + b"".join(rest) + scan


def _image(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    base = Image.fromarray(cells).resize((width, height), Image.BICUBIC,
                                         box=(0, 0, width / 64, height / 64))
    noise = rng.integers(-10, 11, (height, width, 3))
    return np.clip(np.asarray(base, np.int16) + noise, 0, 255).astype(np.uint8)


def _levels(width: int, height: int) -> list[np.ndarray]:
    full = Image.fromarray(_image(width, height, seed=7))
    return [np.asarray(full.resize((width >> k, height >> k), Image.BOX)) for k in range(3)]


def write_tables_slide(path: Path, variant: str, width: int = 1920, height: int = 1408,
                       aperio: bool = False) -> None:
    """Three-level tiled TIFF whose tiles are abbreviated JPEG streams plus JPEGTables;
    ``aperio``: with an Aperio ImageDescription, so OpenSlide opens it as an SVS."""
    rgb, how, _ = VARIANTS[variant]
    kwargs = ({"subsampling": (1, 1), "compressionargs": {"outcolorspace": "rgb"}}
              if rgb else {})
    with tifffile.TiffWriter(path) as tif:
        for k, level in enumerate(_levels(width, height)):
            lh, lw = level.shape[:2]
            padded = np.full((-(-lh // TS) * TS, -(-lw // TS) * TS, 3), 255, np.uint8)
            padded[:lh, :lw] = level
            streams, tables = [], set()
            for y in range(0, padded.shape[0], TS):
                for x in range(0, padded.shape[1], TS):
                    t, s = _split_tables(_encode(padded[y:y + TS, x:x + TS], rgb, how))
                    tables.add(t)
                    streams.append(s)
            assert len(tables) == 1  # fixed quality, standard Huffman tables: shareable
            tif.write(iter(streams), shape=(lh, lw, 3), dtype=np.uint8, tile=(TS, TS),
                      compression="jpeg", photometric="rgb", jpegtables=tables.pop(),
                      subfiletype=1 if k and not aperio else 0, metadata=None, **kwargs,
                      description=(f"Aperio Image Library vTEST\r\n{width}x{height} ({TS}x{TS})"
                                   f" JPEG/RGB Q=80|AppMag = 20|MPP = 0.5")
                      if aperio and k == 0 else None)


@pytest.mark.parametrize("variant,aperio", [(v, False) for v in sorted(VARIANTS)]
                         + [("ycbcr", True), ("rgb-unmarked", True)])
def test_jpegtables_merge(tmp_path: Path, variant: str, aperio: bool) -> None:
    rgb, _, inject = VARIANTS[variant]
    path = tmp_path / f"{variant}.{'svs' if aperio else 'tiff'}"
    write_tables_slide(path, variant, aperio=aperio)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.jpegtables is not None
        assert page.photometric == (2 if rgb else 6)
        decoded = [p.asarray() for p in tif.pages]
    originals = _levels(1920, 1408)
    r = OpenSlideReader(str(path), tile_size=TS, overlap=0)
    try:
        info = r.describe()
        assert info["vendor"] == ("aperio" if aperio else "generic-tiff")
        top = info["dz_levels"] - 1
        passed = [lv for lv in range(top + 1) if r.stored_tile(lv, 0, 0)]
        assert passed == ([] if inject is None else [top - 2, top - 1, top])
        dz = _deepzoom(r)
        for k in range(3):
            dz_level = top - k
            for col, row in _interior_tiles(path, k):
                expected = np.asarray(dz.get_tile(dz_level, (col, row)))
                window = np.s_[row * TS:(row + 1) * TS, col * TS:(col + 1) * TS]
                # the right colour space: close to what was encoded (q80 on noisy content)
                assert np.abs(expected.astype(int) - originals[k][window]).mean() < 8
                if variant in ("ycbcr", "rgb-unmarked", "rgb-adobe"):  # markers agree
                    assert np.array_equal(decoded[k][window], expected)
                data = r.tile(dz_level, col, row, "jpeg", Q)
                if inject is None:  # contradicting markers: rendered, not passed through
                    assert r.stored_tile(dz_level, col, row) is None
                    assert data == _rendered(r, dz_level, col, row)
                    continue
                raw, tables = _stored(path, k, col, row)
                assert data == _merged(raw, tables, inject)
                assert np.array_equal(_pixels(data), expected)
    finally:
        r.close()


@pytest.mark.parametrize("variant", ["rgb-unmarked", "ycbcr-rgb-ids", "rgb-jfif",
                                     "ycbcr-adobe-rgb"])
def test_plain_merge_would_decode_wrong(tmp_path: Path, variant: str) -> None:
    """Why the Adobe marker is added (or the tile refused): merged as-is, a standalone
    decoder reads these streams in the other colour space than the TIFF (and OpenSlide)."""
    path = tmp_path / f"{variant}.tiff"
    write_tables_slide(path, variant, 512, 512)
    raw, tables = _stored(path, 0, 0, 0)
    truth = np.asarray(
        DeepZoomGenerator(openslide.OpenSlide(str(path)), TS, 0, False).get_tile(9, (0, 0)))
    assert np.abs(_pixels(_merged(raw, tables)).astype(int) - truth).mean() > 30


def test_short_jfif_app0_is_not_jfif_to_libjpeg(tmp_path: Path) -> None:
    """libjpeg takes an APP0 for JFIF only with 14 bytes of data: a shorter one leaves a
    YCbCr stream with ids 'R','G','B' to be read as RGB, so the Adobe marker is still due."""
    from array import array

    from readers.passthrough import StoredLevel, standalone_jpeg

    tile = _levels(TS, TS)[0]
    stream = _encode(tile, False, "idsRGB")
    short_jfif = b"\xff\xe0\x00\x0cJFIF\x00\x01\x01\x00\x00\x01"  # 10 bytes of data
    lv = StoredLevel(offsets=array("Q"), counts=array("Q"), across=1, full_cols=1, full_rows=1,
                tables=b"", tables_dqt=False, tables_dht=False, rgb=False, tile_size=TS)
    for app0, adobe_added in ((short_jfif, True), (JFIF, False)):
        data = stream[:2] + app0 + stream[2:]
        out = standalone_jpeg(data, lv, TS)
        assert out is not None
        assert (_adobe(1) in out) is adobe_added
        assert np.abs(_pixels(out).astype(int) - tile).mean() < 8  # read as YCbCr
