"""DICOM slides with odd level sizes, so fractional downsamples (2001 px over 1001 px is
1.9988...), from a real Orthanc against OpenSlide reading the same files: every DeepZoom
tile of every level at 254/1 (and at the frames' own 256/0, with passed-through frames,
for the JPEG series), IIIF regions. OpenSlide paints frames at sub-pixel offsets there
(readers/openslide_paint.py); these are the reads that rounding to whole pixels got
wrong.

Tiles are compared as pixels from ``DeepZoomGenerator`` over the reader's slide and over
``openslide.OpenSlide`` (what ``tile()`` encodes; PNG-encoding ~700 tiles would cost
more than the rest); a sample goes through ``tile()`` end to end as well."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from config.settings import Settings
from readers.base import RegionRequest
from readers.dicom_reader import DicomReader
from readers.factory import ReaderFactory
from scripts.benchlib import orthanc
from scripts.benchlib.dicom_slides import level_file, make_dicom_slide, series_uids

# (width, height, frame encoding): lossless raw and JPEG 2000, and baseline JPEG (the
# one passed through); level sizes 2001/1001/501, 1999/1000/500, 4097/2049/.../257
SLIDES = [(2001, 1501, "raw"), (1999, 1333, "j2k"), (4097, 3073, "jpeg")]
REGIONS = [(0, 0, 2000, 1300, 500, 325), (1001, 3, 997, 1297, 250, 325),
           (5, 9, 1990, 1320, 995, 660)]


class Odd(NamedTuple):
    stores: str
    remote_id: str  # in the PACS
    local_id: str  # the same files in a local store
    local_file: Path
    encoding: str


@pytest.fixture(params=SLIDES, ids=lambda s: f"{s[0]}x{s[1]}-{s[2]}")
def odd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Odd]:
    """One odd-sized series, in an Orthanc of its own and in a local store."""
    why = orthanc.missing()
    if why:
        pytest.skip(f"PACS: {why}")
    pytest.importorskip("wsidicomizer")
    width, height, encoding = request.param
    files = make_dicom_slide(tmp_path / "odd", encoding=encoding, width=width,
                             height=height, seed=width)
    study, series = series_uids(files)
    local = level_file(files)
    with orthanc.OrthancServer() as pacs:
        pacs.upload(files)
        yield Odd(f"pacs={pacs.dicomweb_url},local={tmp_path}", f"pacs/{study}/{series}",
                  f"local/odd/{local.name}", local, encoding)


def _outcome(dz: DeepZoomGenerator, level: int, col: int, row: int) -> np.ndarray | str:
    """The tile's pixels, or the error DeepZoomGenerator's arithmetic gives on a few
    odd-size tiles at 256/0 (the same on both sides)."""
    try:
        return np.asarray(dz.get_tile(level, (col, row)))
    except (ZeroDivisionError, openslide.OpenSlideError, ValueError) as exc:
        return type(exc).__name__


def _every_tile(remote: DicomReader, tile_size: int, overlap: int, local_file: Path
                ) -> tuple[int, int]:
    """Every tile of every level equal; returns (tiles, tiles on fractional levels)."""
    theirs = openslide.OpenSlide(str(local_file))
    try:
        ours_dz = DeepZoomGenerator(remote.slide, tile_size, overlap, True)
        theirs_dz = DeepZoomGenerator(theirs, tile_size, overlap, True)
        assert ours_dz.level_tiles == theirs_dz.level_tiles
        count = fractional = 0
        for level, (cols, rows) in enumerate(ours_dz.level_tiles):
            for col in range(cols):
                for row in range(rows):
                    (x, _), slide_level, _ = ours_dz.get_tile_coordinates(level, (col, row))
                    want = _outcome(theirs_dz, level, col, row)
                    got = _outcome(ours_dz, level, col, row)
                    assert np.array_equal(got, want), (tile_size, level, col, row)
                    count += 1
                    fractional += not (x / theirs.level_downsamples[slide_level]).is_integer()
        return count, fractional
    finally:
        theirs.close()


def test_every_tile_passthrough_and_regions_equal_openslide(odd: Odd) -> None:
    factory = ReaderFactory(Settings(stores=odd.stores))
    remote, local = factory.open(odd.remote_id), factory.open(odd.local_id)
    assert isinstance(remote, DicomReader)
    try:
        a, b = remote.describe(), local.describe()
        for key in ("dz_dimensions", "dz_tiles", "level_dimensions", "level_downsamples"):
            assert a[key] == b[key], key
        assert sum(not float(d).is_integer() for d in a["level_downsamples"]) >= 1
        count, fractional = _every_tile(remote, 254, 1, odd.local_file)
        assert fractional > count // 10  # most tiles of the lower levels
        # end to end, the encoded bytes: the last (fractional) levels' tiles
        for level in range(len(a["dz_tiles"]) - 4, len(a["dz_tiles"]) - 1):
            cols, rows = a["dz_tiles"][level]
            for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
                assert remote.tile(level, col, row, "png", 75) == \
                    local.tile(level, col, row, "png", 75), (level, col, row)
        for region in REGIONS:
            req = RegionRequest(*region, fmt="png")
            assert remote.region(req, 4096 * 4096, 75) == \
                local.region(req, 4096 * 4096, 75), region
    finally:
        remote.close()
        local.close()
    if odd.encoding != "jpeg":
        return  # 256/0 adds the passthrough rule, which only baseline JPEG frames meet
    native = ReaderFactory(Settings(stores=odd.stores, tile_size=256, overlap=0))
    remote = native.open(odd.remote_id)
    assert isinstance(remote, DicomReader)
    try:
        _every_tile(remote, 256, 0, odd.local_file)
        _passed_through_frames_are_openslides_pixels(remote, odd)
    finally:
        remote.close()


def _passed_through_frames_are_openslides_pixels(remote: DicomReader, odd: Odd) -> None:
    """A frame goes out as stored only where OpenSlide copies it (a whole level
    position: level 0 here); there its pixels are OpenSlide's tile."""
    theirs = openslide.OpenSlide(str(odd.local_file))
    try:
        dz = DeepZoomGenerator(theirs, 256, 0, True)
        passed = 0
        for level, (cols, rows) in enumerate(dz.level_tiles):
            for col in range(cols):
                for row in range(rows):
                    stored = remote.stored_tile(level, col, row)
                    if stored is not None:
                        passed += 1
                        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))),
                                              np.asarray(dz.get_tile(level, (col, row))))
        assert passed > 0
    finally:
        theirs.close()
