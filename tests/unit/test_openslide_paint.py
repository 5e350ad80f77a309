"""readers/openslide_paint.py against the real OpenSlide, on pyramidal TIFFs whose levels
have fractional downsamples (odd sizes): the painting code is OpenSlide's grid and cairo
for every tiled format, so a generic TIFF with the DICOM series' geometry exercises what
a DICOM read must reproduce. Noise content, so every wrong weight or rounding shows."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from readers.openslide_paint import Grid, read_region

TILE = 256


def _write_pyramid(path: Path, width: int, height: int, levels: int, seed: int
                   ) -> list[np.ndarray]:
    """Uncompressed tiled levels of ceil(size / 2**k), noise with a few flat patches and
    hard edges (the two extremes of interpolation)."""
    rng = np.random.default_rng(seed)
    arrays = []
    with tifffile.TiffWriter(path) as tif:
        for k in range(levels):
            w, h = -(-width // 2 ** k), -(-height // 2 ** k)
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            a[h // 3:h // 2, w // 4:w // 2] = (255, 255, 255)
            a[: h // 5, w // 2:] = (0, 0, 0)
            tif.write(a, tile=(TILE, TILE), photometric="rgb", compression=None,
                      metadata=None, subfiletype=1 if k else 0)
            arrays.append(a)
    return arrays


def _fetch(level: np.ndarray):  # noqa: ANN202 - the callback's type is TileFetch
    def fetch(cells: list[tuple[int, int]]) -> list[np.ndarray]:
        out = []
        for c, r in cells:
            tile = np.full((TILE, TILE, 3), 77, np.uint8)  # padding OpenSlide must clip
            part = level[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
            tile[:part.shape[0], :part.shape[1]] = part
            out.append(tile)
        return out
    return fetch


@pytest.mark.parametrize(("width", "height", "levels"),
                         [(2001, 1501, 3), (1999, 1333, 3), (4097, 1025, 3)])
def test_random_regions_equal_openslide_on_every_level(tmp_path: Path, width: int,
                                                       height: int, levels: int) -> None:
    path = tmp_path / "odd.tif"
    arrays = _write_pyramid(path, width, height, levels, seed=width)
    slide = openslide.OpenSlide(str(path))
    assert slide.level_count == levels
    rng = random.Random(width * height)
    fractional = 0
    try:
        for level in range(levels):
            lh, lw = arrays[level].shape[:2]
            ds = slide.level_downsamples[level]
            grid = Grid(lw, lh, TILE, TILE, ds)
            for _ in range(40):
                w, h = rng.choice([1, 3, 254, 256, 300]), rng.choice([1, 2, 255, 256, 290])
                x = rng.randint(-40, width + 10)
                y = rng.randint(-40, height + 10)
                want = np.asarray(slide.read_region((x, y), level, (w, h)))
                got = read_region(grid, x, y, w, h, _fetch(arrays[level]))
                assert np.array_equal(got, want), (level, x, y, w, h)
                fractional += not (x / ds).is_integer()
    finally:
        slide.close()
    assert fractional >= 30 * (levels - 1)  # the reads did exercise sub-pixel offsets


def test_seams_edges_and_4096_squares(tmp_path: Path) -> None:
    """Reads that straddle tile seams and the level's right/bottom edge (alpha below
    255), start left of / above the slide, and span more than one of OpenSlide's
    4096 px squares."""
    path = tmp_path / "odd.tif"
    arrays = _write_pyramid(path, 4097, 1153, 2, seed=5)
    slide = openslide.OpenSlide(str(path))
    try:
        ds = slide.level_downsamples[1]
        grid = Grid(2049, 577, TILE, TILE, ds)
        for x, y, w, h in [(1019, 509, 30, 30), (4080, 1140, 20, 20), (-7, -9, 4200, 40),
                           (3, 5, 4500, 300), (1001, 77, 5000, 20), (-999, 1000, 50, 10),
                           (11, 13, 300, 4200)]:
            want = np.asarray(slide.read_region((x, y), 1, (w, h)))
            got = read_region(grid, x, y, w, h, _fetch(arrays[1]))
            assert np.array_equal(got, want), (x, y, w, h)
        partial = np.asarray(slide.read_region((4080, 1140), 1, (20, 20)))[..., 3]
        assert ((partial > 0) & (partial < 255)).any()  # the edge the model must match
    finally:
        slide.close()


def test_whole_positions_are_plain_copies() -> None:
    """Level 0 and whole level positions copy the frames; past the level is 0."""
    level = np.arange(300 * 260 * 3, dtype=np.uint32).reshape(260, 300, 3).astype(np.uint8)
    grid = Grid(300, 260, TILE, TILE, 1.0)
    got = read_region(grid, 250, 200, 100, 100, _fetch(level))
    assert np.array_equal(got[:60, :50, :3], level[200:260, 250:300])
    assert (got[:60, :50, 3] == 255).all()
    assert not got[60:].any() and not got[:, 50:].any()


def test_sliver_tiles_of_an_odd_level_render(tmp_path: Path) -> None:
    """DeepZoomGenerator gives a few edge tiles of odd-sized levels a zero-pixel read and
    fails on them (ZeroDivisionError); every reader draws them from their level pixel."""
    import io

    from openslide.deepzoom import DeepZoomGenerator
    from PIL import Image

    from config.settings import Settings
    from readers.factory import ReaderFactory

    _write_pyramid(tmp_path / "odd.tiff", 4097, 3073, 3, 7)
    slide = openslide.OpenSlide(str(tmp_path / "odd.tiff"))
    dz = DeepZoomGenerator(slide, 256, 0, True)
    slivers = []
    for level, (cols, rows) in enumerate(dz.level_tiles):
        for col in range(cols):
            for row in range(rows):
                if min(dz.get_tile_coordinates(level, (col, row))[2]) == 0:
                    slivers.append((level, col, row))
    assert slivers, "the geometry no longer makes sliver tiles: pick another size"
    failing = 0
    for level, col, row in slivers:
        try:
            dz.get_tile(level, (col, row))
        except ZeroDivisionError:
            failing += 1
    assert failing, "DeepZoomGenerator draws every sliver now: this test can go"
    drawn = []
    for passthrough in (True, False):
        reader = ReaderFactory(Settings(slides=str(tmp_path), tile_size=256, overlap=0,
                                        passthrough=passthrough)).open("odd.tiff")
        try:
            for level, col, row in slivers:
                image = Image.open(io.BytesIO(reader.tile(level, col, row, "png", 75)))
                assert image.size == dz.get_tile_dimensions(level, (col, row))
                pixels = np.asarray(image)
                assert pixels.min() < 250  # the edge pixels (blended), not only background
                drawn.append(pixels)
        finally:
            reader.close()
    half = len(drawn) // 2
    assert all(np.array_equal(a, b) for a, b in zip(drawn[:half], drawn[half:], strict=True))
    slide.close()
