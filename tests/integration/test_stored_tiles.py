"""Stored-tile passthrough through the whole system at native geometry (256/0).

The gateway reads stored tiles itself once it has indexed the slide; until then, and
when it is switched off, the workers pass the same bytes through. Edge tiles are
rendered, so they come from the router either way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from readers.passthrough import PassthroughIndex
from tests.helpers import System, wait_for

TILE = 256


@pytest.fixture(scope="module", params=[True, False], ids=["gateway-reads", "workers-read"])
def native(slide_root: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    sysm = System(slide_root, workers=1, tile_size=TILE, overlap=0,
                  gateway_stored_tiles=request.param)
    try:
        sysm.start()
        yield sysm
    finally:
        sysm.stop()


def _stored(path: Path, level: int, col: int, row: int) -> bytes:
    with openslide.OpenSlide(str(path)) as osr:
        index = PassthroughIndex.build(str(path), osr, DeepZoomGenerator(osr, TILE, 0, True),
                                       TILE, True)
        assert index is not None
        try:
            data = index.stored_tile(level, col, row)
        finally:
            index.close()
    assert data is not None
    return data


def _gateway(system: System) -> dict:
    return system.stats()["gateway"]


def test_interior_tiles_are_the_stored_bytes_over_http_and_websocket(
        native: System, slide_root: Path) -> None:
    path = slide_root / "a.tiff"
    with openslide.OpenSlide(str(path)) as osr:
        top = DeepZoomGenerator(osr, TILE, 0, True).level_count - 1
    expected = _stored(path, top, 3, 2)
    gateway_reads = native.settings.gateway_stored_tiles
    before = _gateway(native)
    relayed = native.stats()["routing"]["requests"]
    tile = f"/dz/a.tiff_files/{top}/3_2.jpeg"
    status, headers, body = native.get(tile)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == expected
    if gateway_reads:  # the index is built off the event loop; then the gateway answers
        wait_for(lambda: native.get(f"/dz/a.tiff_files/{top}/4_2.jpeg")[0] == 200
                 and _gateway(native)["stored_hits"] > before["stored_hits"], 10,
                 what="gateway serving stored tiles")
        hits = _gateway(native)["stored_hits"]
        relayed = native.stats()["routing"]["requests"]
        assert native.get(tile)[2] == expected
        ws = native.ws()
        try:
            header, data = ws.tile("a.tiff", top, 3, 2)
        finally:
            ws.close()
        assert header["ok"] is True and header["mime"] == "image/jpeg" and data == expected
        assert _gateway(native)["stored_hits"] == hits + 2
        assert native.stats()["routing"]["requests"] == relayed  # none reached the router
    else:
        assert _gateway(native)["stored_hits"] == 0
        assert native.stats()["routing"]["requests"] > relayed


def test_edge_tiles_are_rendered_and_out_of_range_is_an_error(
        native: System, slide_root: Path) -> None:
    path = slide_root / "a.tiff"
    with openslide.OpenSlide(str(path)) as osr:
        dz = DeepZoomGenerator(osr, TILE, 0, True)
        top = dz.level_count - 1
        cols, rows = dz.level_tiles[top]
        edge = dz.get_tile(top, (cols - 1, rows - 1))
    for _ in range(2):  # before and after the gateway's index exists
        status, _, body = native.get(f"/dz/a.tiff_files/{top}/{cols - 1}_{rows - 1}.jpeg")
        assert status == 200
        image = Image.open(io.BytesIO(body))
        assert image.size == edge.size
        diff = np.abs(np.asarray(image, np.int16) - np.asarray(edge, np.int16))
        assert diff.mean() < 3  # rendered and re-encoded, not a padded stored tile
        assert native.get(f"/dz/a.tiff_files/{top}/{cols}_0.jpeg")[0] == 404
