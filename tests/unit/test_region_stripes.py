"""Large IIIF reads in stripes (readers/region.py ``read_striped``): the same image as one
resize of the whole read, never more than a stripe of level pixels in memory, and the
read limits (4x the output limit at once, 16x in stripes, beyond that too_large)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from config.errors import MessageTooLarge
from readers import region
from readers.base import RegionRequest
from readers.openslide_reader import OpenSlideReader
from readers.region import plan_read, read_plan, read_striped, render_region
from readers.stored_levels import DecodedTiles

W, H = 3000, 2200


def write_pyramid(path: Path, width: int, height: int, downs: tuple[int, ...] = (1, 4, 16),
                  tile: int = 256) -> Path:
    """A tiled JPEG TIFF whose levels are successive IFDs at ``downs`` (subfiletype=1,
    metadata=None for the reduced ones), like an Aperio SVS's 4x steps. Content: smooth
    colour fields and a fine pattern, evaluated at each level's pixel centres, one tile at
    a time (a 140-megapixel level never sits in memory)."""

    def tiles(down: int):
        lw, lh = -(-width // down), -(-height // down)
        for ty in range(0, lh, tile):
            y = (np.arange(ty, ty + tile) + 0.5) * down
            for tx in range(0, lw, tile):
                x = (np.arange(tx, tx + tile) + 0.5) * down
                r = (200 + 40 * np.outer(np.cos(y / 500), np.sin(x / 700))
                     + 12 * np.outer(np.sin(y / 23), np.sin(x / 37)))
                g = 140 + 50 * np.sin(y / 900)[:, None] + 50 * np.cos(x / 1300)[None, :]
                b = 170 + 60 * np.outer(np.sin(y / 311), np.cos(x / 413))
                yield np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, down in enumerate(downs):
            lw, lh = -(-width // down), -(-height // down)
            tif.write(tiles(down), shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile),
                      compression="jpeg", compressionargs={"level": 85}, photometric="rgb",
                      subfiletype=1 if k else 0, metadata=None)
    return path


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000x2200 with downsamples 1 and 4."""
    return write_pyramid(tmp_path_factory.mktemp("stripes") / "four.tiff", W, H, (1, 4))


class CountingSlide:
    """An OpenSlide that records the size of every ``read_region``."""

    def __init__(self, slide: openslide.OpenSlide) -> None:
        self._slide = slide
        self.reads: list[tuple[int, int, tuple[int, int]]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._slide, name)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]
                    ) -> Image.Image:
        self.reads.append((level, location[1], size))
        return self._slide.read_region(location, level, size)


@pytest.mark.parametrize("x,y,w,h,ow,oh,budget", [
    (0, 0, W, H, 1167, 856, 1 << 19),  # IIIF max for maxArea 1e6: 2.57x from level 0
    (0, 0, W, H, 1000, 733, 1 << 18),  # 3x
    (333, 121, 2401, 1999, 700, 583, 1 << 18),  # odd offsets, 3.43x
    (0, 0, W, H, 1499, 1099, 1 << 20),  # just over 2x
    (0, 0, W, H, 751, 551, 1 << 19),  # just under 4x
])
def test_striped_read_matches_one_resize(four: Path, x: int, y: int, w: int, h: int,
                                         ow: int, oh: int, budget: int) -> None:
    """Seams: at most 1 level apart from one LANCZOS resize of the whole read (Pillow's
    32-bit float box moves a stripe's filter centres by ~1e-5 px), and almost all equal."""
    with openslide.OpenSlide(str(four)) as slide:
        plan = plan_read(slide, x, y, w, h, ow, oh)
        assert plan.level == 0
        whole = np.asarray(read_plan(slide, plan, (ow, oh))).astype(np.int16)
        counting = CountingSlide(slide)
        striped = np.asarray(read_striped(counting, plan, (ow, oh), stripe_pixels=budget))
    assert len(counting.reads) >= 5
    diff = np.abs(whole - striped)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


def test_reads_stay_within_a_stripe(four: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IIIF ``max`` that needs 6.6x the output limit from level 0: read a stripe at a time,
    through OpenSlide and through stored tiles alike, covering every level row."""
    monkeypatch.setattr(region, "STRIPE_PIXELS", 1 << 19)
    req = RegionRequest(0, 0, W, H, 1167, 856, "png")
    with openslide.OpenSlide(str(four)) as slide:
        counting = CountingSlide(slide)
        data, level, size = render_region(counting, req, 1_000_000)
        one = read_plan(slide, plan_read(slide, 0, 0, W, H, 1167, 856), (1167, 856))
    assert (level, size) == (0, (1167, 856))
    assert len(counting.reads) >= 12
    assert all(lv == 0 and sw * sh <= 1 << 19 for lv, _, (sw, sh) in counting.reads)
    covered = set()
    for _, top, (_, rows) in counting.reads:
        covered.update(range(top, top + rows))
    assert covered == set(range(H))
    got = np.asarray(Image.open(io.BytesIO(data))).astype(np.int16)
    assert np.abs(got - np.asarray(one)).max() <= 1

    r = OpenSlideReader(str(four), decoded=DecodedTiles(16 << 20))
    try:
        stored = r._stored
        assert stored is not None
        sizes: list[tuple[int, int]] = []
        cut = stored.read_region

        def spy(location: tuple[int, int], lv: int, size: tuple[int, int]) -> Image.Image | None:
            sizes.append(size)
            image = cut(location, lv, size)
            assert image is not None  # whole level pixels: the stored path does the work
            return image

        stored.read_region = spy  # type: ignore[method-assign]
        assert r.region(req, 1_000_000, 75) == (data, 0)
        assert len(sizes) == len(counting.reads)
        assert max(sw * sh for sw, sh in sizes) <= 1 << 19
    finally:
        r.close()


def test_read_limits(tmp_path: Path) -> None:
    """Up to 16x the output limit is read (in stripes); one pixel more is too_large."""
    path = write_pyramid(tmp_path / "flat.tiff", W, H, (1,))
    req = RegionRequest(0, 0, W, H, 100, 100)  # no pyramid: read all of level 0
    with openslide.OpenSlide(str(path)) as slide:
        data, level, size = render_region(slide, req, W * H // 16)
        assert (level, size) == (0, (100, 100)) and data[:2] == b"\xff\xd8"
        with pytest.raises(MessageTooLarge, match="pixels read at level 0"):
            render_region(slide, req, W * H // 16 - 1)
