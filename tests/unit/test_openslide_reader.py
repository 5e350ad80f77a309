"""OpenSlideReader on real generated pyramidal TIFFs: exact DeepZoomGenerator tiles."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from config.errors import BadSlide, OutOfRange, SlideNotFound
from readers.openslide_reader import OpenSlideReader

GEOMETRIES = [(254, 1, True), (256, 0, False)]


@pytest.fixture(scope="module", params=GEOMETRIES, ids=lambda g: f"ts{g[0]}-ov{g[1]}-lb{g[2]}")
def pair(request: pytest.FixtureRequest, slide_a: str
         ) -> Iterator[tuple[OpenSlideReader, DeepZoomGenerator]]:
    """Reader under test and an independent reference generator on its own handle.

    passthrough=False: stored-tile passthrough (tests/unit/test_passthrough.py) would
    return the file's own JPEG bytes for the 256/0 geometry instead of a re-encode."""
    ts, ov, lb = request.param
    reader = OpenSlideReader(slide_a, tile_size=ts, overlap=ov, limit_bounds=lb,
                             passthrough=False)
    ref = openslide.OpenSlide(slide_a)
    yield reader, DeepZoomGenerator(ref, ts, ov, lb)
    reader.close()
    ref.close()


def _addresses(dz: DeepZoomGenerator) -> list[tuple[int, int, int]]:
    """Level 0, a middle level's corners, and the top level's first, interior and edge tiles."""
    top = dz.level_count - 1
    cols, rows = dz.level_tiles[top]
    mid = top - 1
    mcols, mrows = dz.level_tiles[mid]
    return [(0, 0, 0), (mid, 0, 0), (mid, mcols - 1, mrows - 1), (top, 0, 0),
            (top, cols // 2, rows // 2), (top, cols - 1, 0), (top, 0, rows - 1),
            (top, cols - 1, rows - 1)]


def test_png_tiles_are_pixel_identical(pair: tuple[OpenSlideReader, DeepZoomGenerator]) -> None:
    """The reader's contract: exactly DeepZoomGenerator.get_tile's pixels (PNG is lossless)."""
    reader, dz = pair
    for level, col, row in _addresses(dz):
        expected = dz.get_tile(level, (col, row))
        got = Image.open(io.BytesIO(reader.tile(level, col, row, "png", 75)))
        assert got.format == "PNG"
        assert got.size == expected.size, (level, col, row)
        assert np.array_equal(np.asarray(got), np.asarray(expected)), (level, col, row)


def test_jpeg_tiles_are_plain_pillow_encodes(
        pair: tuple[OpenSlideReader, DeepZoomGenerator]) -> None:
    """JPEG bytes equal a plain Pillow save at the quality asked (no extra options)."""
    reader, dz = pair
    for level, col, row in _addresses(dz):
        buf = io.BytesIO()
        dz.get_tile(level, (col, row)).save(buf, "jpeg", quality=75)
        assert reader.tile(level, col, row, "jpeg", 75) == buf.getvalue(), (level, col, row)


def test_edge_tiles_are_smaller(pair: tuple[OpenSlideReader, DeepZoomGenerator]) -> None:
    """Sanity of the addresses used above: the last column/row really is a partial tile."""
    reader, dz = pair
    top = dz.level_count - 1
    cols, rows = dz.level_tiles[top]
    w, h = Image.open(io.BytesIO(reader.tile(top, cols - 1, rows - 1, "png", 75))).size
    full = reader.tile_size + 2 * reader.overlap
    assert w < full and h < full


def test_describe_matches_deepzoom(pair: tuple[OpenSlideReader, DeepZoomGenerator]) -> None:
    reader, dz = pair
    d = reader.describe()
    assert d["dz_dimensions"] == [list(x) for x in dz.level_dimensions]
    assert d["dz_tiles"] == [list(x) for x in dz.level_tiles]
    assert d["dz_levels"] == dz.level_count
    assert [d["width"], d["height"]] == list(dz.level_dimensions[-1]) == [1500, 1000]
    assert (d["tile_size"], d["overlap"]) == (reader.tile_size, reader.overlap)
    assert d["mpp_x"] == 0.25 and d["mpp_y"] == 0.25
    assert d["vendor"] == "generic-tiff"
    assert d["level_dimensions"][0] == [1500, 1000] and d["level_downsamples"][0] == 1.0
    assert isinstance(d["properties"], dict) and d["associated"] == []


def test_out_of_range_tiles(pair: tuple[OpenSlideReader, DeepZoomGenerator]) -> None:
    """One past the end in each coordinate (and negatives) is OutOfRange, not a crash."""
    reader, dz = pair
    top = dz.level_count - 1
    cols, rows = dz.level_tiles[top]
    for level, col, row in [(dz.level_count, 0, 0), (top, cols, 0), (top, 0, rows),
                            (top, cols, rows), (-1, 0, 0), (top, -1, 0), (0, 1, 0)]:
        with pytest.raises(OutOfRange):
            reader.tile(level, col, row, "jpeg", 75)
    reader.tile(top, cols - 1, rows - 1, "jpeg", 75)  # the last valid tile still works


def test_thumbnail_and_missing_associated(slide_a: str) -> None:
    reader = OpenSlideReader(slide_a)
    try:
        image = Image.open(io.BytesIO(reader.associated("thumbnail", 128)))
        assert image.format == "JPEG"
        assert image.width <= 128 and image.height <= 128 and max(image.size) == 128
        with pytest.raises(SlideNotFound):
            reader.associated("nope", 64)
    finally:
        reader.close()


def test_text_file_is_bad_slide(unit_root: Path) -> None:
    with pytest.raises(BadSlide) as info:
        OpenSlideReader(str(unit_root / "notaslide.tiff"))
    assert info.value.code == "bad_slide"


def test_truncated_slide_is_bad_slide(unit_root: Path) -> None:
    """A truncated TIFF may open (Pillow reads headers lazily) but must fail as BadSlide on
    the first pixel read, never with a raw OSError."""
    with pytest.raises(BadSlide):
        reader = OpenSlideReader(str(unit_root / "truncated.tiff"))
        try:
            top = reader.describe()["dz_levels"] - 1
            reader.tile(top, 0, 0, "jpeg", 75)
        finally:
            reader.close()


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFound) as info:
        OpenSlideReader(str(tmp_path / "missing.tiff"), name="missing.tiff")
    assert "missing.tiff" in info.value.message


def test_aperio_demo_slide_has_vendor_objective_and_associated_images(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The demo's SVS layout: OpenSlide sees an Aperio slide with label and macro."""
    from readers.demo_slide import write_demo_slide

    path = write_demo_slide(tmp_path_factory.mktemp("svs") / "demo.svs", 1200, 900,
                            aperio=True)
    reader = OpenSlideReader(path)
    try:
        info = reader.describe()
        assert info["vendor"] == "aperio"
        assert info["objective_power"] == "40" and info["mpp_x"] == pytest.approx(0.25)
        assert {"label", "macro", "thumbnail"} <= set(info["associated"])
        assert info["level_dimensions"][0] == [1200, 900]
        assert reader.associated("label", 64)[:2] == b"\xff\xd8"
    finally:
        reader.close()
