"""Tiles cut from stored JPEG tiles by Pillow (readers/stored_levels.py): the same bytes as
OpenSlide's ``DeepZoomGenerator.get_tile`` + the same encode, on every tile of every level,
and OpenSlide's answer (or error) wherever the stored tiles can't be vouched for."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from config.settings import Settings
from readers.base import RegionRequest
from readers.demo_slide import write_demo_slide
from readers.encode import encode_image
from readers.openslide_reader import OpenSlideReader
from readers.region import render_region
from readers.stored_levels import DecodedTiles
from tests.unit.test_passthrough import VARIANTS, write_tables_slide
from workers.handler import RequestHandler

Q = 75


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3000x2200, stored levels at exact 2x: 3000x2200 ... 375x275, 256 px JPEG tiles
    return Path(write_demo_slide(tmp_path_factory.mktemp("sl") / "demo.tiff", 3000, 2200,
                                 seed=5))


def _all_tiles(dz: DeepZoomGenerator) -> list[tuple[int, int, int]]:
    return [(level, col, row) for level in range(dz.level_count)
            for col in range(dz.level_tiles[level][0])
            for row in range(dz.level_tiles[level][1])]


def _check_every_tile(path: Path, tile_size: int, overlap: int, limit_bounds: bool) -> int:
    """Every tile's bytes equal OpenSlide's; returns how many came from stored tiles."""
    r = OpenSlideReader(str(path), tile_size=tile_size, overlap=overlap,
                        limit_bounds=limit_bounds, passthrough=False,
                        decoded=DecodedTiles(8 << 20))
    dz = DeepZoomGenerator(openslide.OpenSlide(str(path)), tile_size, overlap, limit_bounds)
    try:
        for level, col, row in _all_tiles(dz):
            expected = encode_image(dz.get_tile(level, (col, row)), "jpeg", Q)
            assert r.tile(level, col, row, "jpeg", Q) == expected, (level, col, row)
        return r.stored_reads
    finally:
        r.close()


@pytest.mark.parametrize("tile_size,overlap,limit_bounds",
                         [(254, 1, True), (254, 1, False), (256, 0, True), (510, 2, True)])
def test_every_tile_is_what_openslide_renders(demo: Path, tile_size: int, overlap: int,
                                              limit_bounds: bool) -> None:
    rendered = _check_every_tile(demo, tile_size, overlap, limit_bounds)
    assert rendered > 20  # the stored path did the work, not OpenSlide


@pytest.mark.parametrize("variant,aperio", [(v, False) for v in sorted(VARIANTS)]
                         + [("ycbcr", True), ("rgb-unmarked", True)])
def test_jpegtables_and_colour_spaces(tmp_path: Path, variant: str, aperio: bool) -> None:
    """Aperio-style abbreviated streams, RGB and YCbCr: right colours or OpenSlide's path."""
    path = tmp_path / f"{variant}.{'svs' if aperio else 'tiff'}"
    write_tables_slide(path, variant, 1024, 768, aperio=aperio)
    rendered = _check_every_tile(path, 254, 1, True)
    if VARIANTS[variant][2] is None:  # markers contradict the TIFF: never decoded by us
        assert rendered == 0
    else:
        assert rendered > 10


def test_damaged_tile_is_an_error_like_openslide(demo: Path, tmp_path: Path) -> None:
    """A stored tile whose bytes are garbage: OpenSlide's read error (bad_slide), not junk
    pixels; the tiles next to it are still served."""
    path = tmp_path / "damaged.tiff"
    shutil.copy(demo, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = math.ceil(page.imagewidth / page.tilewidth)
        offset, count = page.dataoffsets[across + 1], page.databytecounts[across + 1]
    with open(path, "r+b") as fh:  # stored tile (1, 1) of level 0
        fh.seek(offset)
        fh.write(b"\0" * count)
    handler = RequestHandler(Settings(slides=str(tmp_path)))
    try:
        top = handler.readers.get(path.name).describe()["dz_levels"] - 1
        header, data = handler.safe_handle(
            {"op": "tile", "slide": path.name, "level": top, "col": 1, "row": 1})
        assert header["ok"] is False and header["error"]["code"] == "bad_slide", header
        header, data = handler.safe_handle(
            {"op": "tile", "slide": path.name, "level": top, "col": 5, "row": 5})
        assert header["ok"] is True and data is not None
    finally:
        handler.close()


def test_decoded_cache_is_bounded_and_forgets_closed_readers(demo: Path) -> None:
    cache = DecodedTiles(4 * 256 * 256 * 4)  # four decoded tiles
    r = OpenSlideReader(str(demo), tile_size=254, overlap=1, decoded=cache)
    top = r.describe()["dz_levels"] - 1
    r.tile(top, 1, 1, "jpeg", Q)  # straddles four stored tiles
    assert (len(cache._lru), cache.hits, cache.misses) == (4, 0, 4)
    r.tile(top, 1, 1, "jpeg", Q)  # the same four, decoded once
    assert (cache.hits, cache.misses) == (4, 4)
    r.tile(top, 5, 5, "jpeg", Q)  # four others evict them
    assert len(cache._lru) == 4 and cache.misses == 8
    r.close()
    assert len(cache._lru) == 0


def test_setting_zero_renders_through_openslide(demo: Path) -> None:
    handler = RequestHandler(Settings(slides=str(demo.parent), decoded_cache_bytes=0))
    try:
        assert handler.decoded is None
        assert handler.readers.get(demo.name)._stored is None
    finally:
        handler.close()


def test_pillow_paste_clips_like_the_region_needs() -> None:
    """region() pastes whole stored tiles at negative offsets and relies on clipping."""
    canvas = Image.new("RGB", (4, 4))
    canvas.paste(Image.new("RGB", (8, 8), (9, 9, 9)), (-6, -6))
    assert canvas.getpixel((1, 1)) == (9, 9, 9) and canvas.getpixel((2, 2)) == (0, 0, 0)


def test_four_times_pyramid_resampled_levels(demo: Path, tmp_path: Path) -> None:
    """SVS-style 4x pyramid: the DeepZoom levels between stored ones are read from the
    larger stored level and resized; identical to OpenSlide there too."""
    path = tmp_path / "four.tiff"
    with tifffile.TiffFile(demo) as tif:
        levels = [tif.pages[0].asarray(), tif.pages[2].asarray()]  # downsample 1 and 4
    with tifffile.TiffWriter(path) as tif:
        for k, data in enumerate(levels):
            tif.write(data, tile=(256, 256), compression="jpeg", photometric="rgb",
                      subfiletype=1 if k else 0, metadata=None)
    slide = openslide.OpenSlide(str(path))
    assert slide.level_downsamples == (1.0, 4.0)
    slide.close()
    rendered = _check_every_tile(path, 254, 1, True)
    r = OpenSlideReader(str(path), tile_size=254, overlap=1, decoded=DecodedTiles(8 << 20))
    try:
        top = r.describe()["dz_levels"] - 1
        r.tile(top - 1, 2, 2, "jpeg", Q)  # half resolution: from level 0, resized
        assert r.stored_reads == 1
    finally:
        r.close()
    assert rendered > 60


@pytest.mark.parametrize("x,y,w,h,out_w,out_h", [
    (0, 0, 3000, 2200, 300, 220),  # whole slide, small: a reduced level, resized
    (1000, 700, 512, 512, 512, 512),  # full resolution 1:1, straddling stored tiles
    (1001, 703, 700, 300, 350, 150),  # odd offsets, level 1 (downsample 2)
    (2900, 2100, 100, 100, 40, 40),  # the bottom-right edge
])
def test_iiif_regions_are_what_openslide_renders(demo: Path, x: int, y: int, w: int, h: int,
                                                 out_w: int, out_h: int) -> None:
    r = OpenSlideReader(str(demo), decoded=DecodedTiles(16 << 20))
    try:
        req = RegionRequest(x, y, w, h, out_w, out_h)
        with openslide.OpenSlide(str(demo)) as slide:
            expected = render_region(slide, req, 4096 * 4096, Q)
        assert r.region(req, 4096 * 4096, Q) == expected[:2]
        assert r.stored_reads == 1
    finally:
        r.close()


def test_slide_with_an_icc_profile_renders_through_openslide(tmp_path: Path) -> None:
    """OpenSlide tags what it renders with the slide's profile, so such slides keep its
    path; a profile Pillow cannot even parse must not stop the slide being served."""
    path = tmp_path / "icc.tiff"
    data = np.zeros((512, 512, 3), np.uint8) + 200
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, tile=(256, 256), compression="jpeg", photometric="rgb",
                  metadata=None, extratags=[(34675, 7, 200, b"\0" * 200, True)])
    assert openslide.OpenSlide(str(path)).properties.get("openslide.icc-size") == "200"
    handler = RequestHandler(Settings(slides=str(tmp_path)))
    try:
        header, data = handler.safe_handle(
            {"op": "tile", "slide": path.name, "level": 9, "col": 0, "row": 0})
        assert header["ok"] is True and data
        assert handler.readers.get(path.name).stored_reads == 0
    finally:
        handler.close()
