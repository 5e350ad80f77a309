"""IIIF ``full/max`` on a common pyramid (14001x9999, downsamples 1/4/16, like an Aperio
SVS): the largest size info.json's limits allow, read from level 0 a stripe at a time in
bounded memory, over the real router, worker and gateway."""

from __future__ import annotations

import http.client
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from readers.encode import encode_image
from tests.helpers import System
from tests.unit.test_region_stripes import write_pyramid

W, H = 14001, 9999
NAME = "svs-like.tiff"


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_pyramid(tmp_path_factory.mktemp("max") / NAME, W, H, (1, 4, 16))
    with openslide.OpenSlide(str(path)) as s:
        assert s.level_dimensions == ((W, H), (3501, 2500), (876, 625))
        assert [round(d) for d in s.level_downsamples] == [1, 4, 16]
    return path


@pytest.fixture(scope="module")
def system(slide: Path) -> Iterator[System]:
    sysm = System(slide.parent, workers=1, request_timeout=60.0)
    try:
        sysm.start()
        yield sysm
    finally:
        sysm.stop()


def fetch(system: System, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", system.port, timeout=120)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_full_max_is_the_largest_size_within_the_limits(system: System, slide: Path) -> None:
    status, _, body = fetch(system, f"/iiif/{NAME}/info.json")
    assert status == 200
    info = json.loads(body)
    # the spec's max: the largest size with the image's aspect ratio within the limits
    scale = min(math.sqrt(info["maxArea"] / (W * H)), info["maxWidth"] / W,
                info["maxHeight"] / H, 1.0)
    ow, oh = math.floor(W * scale), math.floor(H * scale)
    assert ow * oh <= info["maxArea"] < W * H

    # warm the worker (slide open, indexes), then measure only the request's own peak
    assert fetch(system, f"/iiif/{NAME}/full/64,/0/default.jpg")[0] == 200
    (worker,) = system.stats()["workers"]
    before = peak_rss(worker["pid"])
    status, headers, body = fetch(system, f"/iiif/{NAME}/full/max/0/default.jpg")
    grown = peak_rss(worker["pid"]) - before
    assert status == 200, body[:300]
    ours = Image.open(io.BytesIO(body))
    assert ours.size == (ow, oh) == (4846, 3461)
    assert headers["X-Tilerouter-Level"] == "0"
    assert any(link.endswith(f'/iiif/{NAME}/full/max/0/default.jpg>;rel="canonical"')
               for link in headers.get_all("Link"))
    # reading level 0 at once needs W x H x 4 bytes (534 MiB) for OpenSlide's RGBA alone,
    # and as much again composited to RGB; stripes, the output and the worker's two
    # 64 MiB tile caches stay well below (about 210 MiB here)
    assert grown < W * H * 4, grown

    # OpenSlide's own thumbnail of that size (from level 0 too, resized once) through the
    # same JPEG encoder: our stripes differ from one resize by at most 1 level in 1 in
    # 40000 values, which the encoder turns into a few levels at most
    with openslide.OpenSlide(str(slide)) as s:
        thumb = s.get_thumbnail((ow, oh))
    assert thumb.size == (ow, oh)
    theirs = Image.open(io.BytesIO(encode_image(thumb, "jpeg", 75)))
    diff = np.abs(np.asarray(ours).astype(np.int16) - np.asarray(theirs))
    assert diff.mean() < 0.01 and diff.max() <= 8, (diff.mean(), diff.max())


@pytest.mark.parametrize("size", ["14001,", ",9999", "pct:50", "4847,3462", "^5000,"])
def test_explicit_sizes_beyond_the_limits_stay_too_large(system: System, size: str) -> None:
    status, _, body = fetch(system, f"/iiif/{NAME}/full/{size}/0/default.jpg")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "too_large"
