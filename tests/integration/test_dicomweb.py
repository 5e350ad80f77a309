"""DICOM whole-slide images from a real PACS (Orthanc over DICOMweb) against the same
series' files read by OpenSlide from a local store: every tile of every level, regions,
passed-through frames, listing, and the failures a PACS can have."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from config.errors import BadSlide, SlideNotFound, Unavailable
from config.settings import Settings
from readers.base import RegionRequest, SlideReader
from readers.dicomweb_store import DicomWebStore
from readers.factory import ReaderFactory
from scripts.benchlib.dicom_slides import level_file, series_uids, stored_frames
from scripts.benchlib.orthanc import OrthancServer
from scripts.benchlib.tcpproxy import TcpProxy
from tests.dicom_servers import PACS_PASSWORD, PACS_USER, DicomSeries

Slides = dict[str, DicomSeries]


def _factory(pacs_url: str, local: str, **overrides: Any) -> ReaderFactory:
    settings: dict[str, Any] = dict(stores=f"pacs={pacs_url},local={local}",
                                    dicomweb_user=PACS_USER, dicomweb_password=PACS_PASSWORD,
                                    remote_timeout=5.0, remote_retries=1)
    settings.update(overrides)
    return ReaderFactory(Settings(**settings))


def _pair(factory: ReaderFactory, series: DicomSeries) -> tuple[SlideReader, SlideReader]:
    local_id = f"local/{series.name}/{level_file(series.files).name}"
    return factory.open(f"pacs/{series.rel}"), factory.open(local_id)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("enc", ["jpeg", "j2k", "raw"])
def test_every_254_1_tile_equals_openslide_on_the_local_files(
        enc: str, dicom_slides: Slides, orthanc_pacs: OrthancServer) -> None:
    factory = _factory(orthanc_pacs.dicomweb_url, str(dicom_slides[enc].folder.parent))
    pacs, local = _pair(factory, dicom_slides[enc])
    try:
        a, b = pacs.describe(), local.describe()
        for key in ("width", "height", "dz_levels", "dz_dimensions", "dz_tiles",
                    "level_dimensions", "level_downsamples", "mpp_x", "mpp_y"):
            assert a[key] == b[key], key
        assert a["vendor"] == b["vendor"] == "dicom"
        assert set(a["associated"]) == set(b["associated"]) == {"label", "macro", "thumbnail"}
        for level, (cols, rows) in enumerate(a["dz_tiles"]):
            for col in range(cols):
                for row in range(rows):
                    assert pacs.tile(level, col, row, "png", 75) == \
                        local.tile(level, col, row, "png", 75), (level, col, row)
            assert pacs.tile(level, 0, 0, "jpeg", 75) == local.tile(level, 0, 0, "jpeg", 75)
    finally:
        pacs.close()
        local.close()


def test_native_tiles_are_the_stored_frames(dicom_slides: Slides,
                                            orthanc_pacs: OrthancServer) -> None:
    """256/0 (the frames' size): interior tiles of every level are the PACS's frame bytes,
    which are the local file's frames and decode to OpenSlide's pixels; edge tiles are
    rendered, equal to OpenSlide's."""
    series = dicom_slides["jpeg"]
    factory = _factory(orthanc_pacs.dicomweb_url, str(series.folder.parent), tile_size=256,
                       overlap=0)
    pacs, local = _pair(factory, series)
    frames = {}  # total pixel columns -> (frames, tile columns)
    for path in series.files:
        data, tile_cols, total_cols = stored_frames(path)
        frames[total_cols] = (data, tile_cols)
    passed = 0
    try:
        info = pacs.describe()
        for level, (cols, rows) in enumerate(info["dz_tiles"]):
            width = info["dz_dimensions"][level][0]
            for col in range(cols):
                for row in range(rows):
                    stored = pacs.stored_tile(level, col, row)
                    want = _png(local.tile(level, col, row, "png", 75))
                    if stored is None:
                        assert _png(pacs.tile(level, col, row, "png", 75)).tolist() == \
                            want.tolist()
                        continue
                    file_frames, tile_cols = frames[width]
                    across = -(-width // tile_cols)
                    assert stored == file_frames[row * across + col]
                    assert pacs.tile(level, col, row, "jpeg", 75) == stored
                    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), want)
                    passed += 1
        assert passed == 7 * 5 + 3 * 2 + 1 * 1  # the whole 256 px frames of levels 0-2
    finally:
        pacs.close()
        local.close()


@pytest.mark.parametrize("region", [(0, 0, 2000, 1500, 500, 375), (300, 200, 700, 500, 700, 500),
                                    (1001, 3, 999, 1497, 250, 374), (0, 0, 2000, 1500, 64, 48)])
def test_iiif_regions_equal_openslide(region: tuple[int, ...], dicom_slides: Slides,
                                      orthanc_pacs: OrthancServer) -> None:
    series = dicom_slides["raw"]
    pacs, local = _pair(_factory(orthanc_pacs.dicomweb_url, str(series.folder.parent)), series)
    try:
        req = RegionRequest(*region, fmt="png")
        assert pacs.region(req, 4096 * 4096, 75) == local.region(req, 4096 * 4096, 75)
    finally:
        pacs.close()
        local.close()


def test_listing_names_and_pages(dicom_slides: Slides, orthanc_pacs: OrthancServer) -> None:
    factory = _factory(orthanc_pacs.dicomweb_url, str(dicom_slides["jpeg"].folder.parent))
    listed = {s["path"]: s for s in factory.list() if str(s["path"]).startswith("pacs/")}
    for enc in ("jpeg", "j2k", "raw"):
        entry = listed.pop(f"pacs/{dicom_slides[enc].rel}")
        meta = dicom_slides[enc].meta
        assert entry["name"] == (f"{meta['patient'].replace('^', ' ')} · {meta['accession']}"
                                 f" · {meta['description']}")
        assert entry["group"] == f"{meta['patient'].replace('^', ' ')} · {meta['accession']}"
    assert list(listed) == [f"pacs/{dicom_slides['not_wsi'].rel}"]  # SM, listed; CT is not
    store = factory.mounts.named["pacs"]
    assert isinstance(store, DicomWebStore)
    first = store.list()
    paged = DicomWebStore("pacs", orthanc_pacs.dicomweb_url, user=PACS_USER,
                          password=PACS_PASSWORD)
    paged.page_size = 1
    calls = paged.round_trips
    assert paged.list() == first
    assert paged.round_trips - calls == len(first) + 1  # one series a page, then the end
    assert store.list() is first  # cached


def test_unknown_not_wsi_and_refused(dicom_slides: Slides, orthanc_pacs: OrthancServer) -> None:
    factory = _factory(orthanc_pacs.dicomweb_url, str(dicom_slides["jpeg"].folder.parent))
    jpeg = dicom_slides["jpeg"]
    for rel in (f"{jpeg.study}/1.2.3.4", f"1.2.3.4/{jpeg.series}"):
        with pytest.raises(SlideNotFound):
            factory.open(f"pacs/{rel}")
    for name in ("not_wsi", "ct"):
        with pytest.raises(BadSlide):
            factory.open(f"pacs/{dicom_slides[name].rel}")
    wrong = _factory(orthanc_pacs.dicomweb_url, "/nonexistent", dicomweb_password="wrong")
    with pytest.raises(Unavailable) as err:
        wrong.open(f"pacs/{jpeg.rel}")
    assert "wrong" not in err.value.message and PACS_PASSWORD not in err.value.message
    assert "127.0.0.1" not in err.value.message


def test_associated_images(dicom_slides: Slides, orthanc_pacs: OrthancServer) -> None:
    factory = _factory(orthanc_pacs.dicomweb_url, "/nonexistent")
    reader = factory.open(f"pacs/{dicom_slides['jpeg'].rel}")
    try:
        sizes = {n: Image.open(io.BytesIO(reader.associated(n, 256))).size
                 for n in ("label", "macro", "thumbnail")}
        assert sizes["thumbnail"] == (256, 192) and max(sizes["macro"]) == 256
        with pytest.raises(SlideNotFound):
            reader.associated("barcode", 64)
    finally:
        reader.close()


def test_a_stalled_pacs_is_unavailable_within_the_bound_then_recovers(
        dicom_slides: Slides, orthanc_pacs: OrthancServer,
        proxy_factory: Callable[..., TcpProxy]) -> None:
    proxy = proxy_factory("127.0.0.1", orthanc_pacs.port, rtt=0.0)
    url = f"dicomweb+{proxy.url}/dicom-web"
    factory = _factory(url, "/nonexistent", remote_timeout=0.5, remote_retries=1)
    slide = f"pacs/{dicom_slides['raw'].rel}"
    reader = factory.open(slide)
    try:
        proxy.set_mode("stall")
        started = time.monotonic()
        with pytest.raises(Unavailable):
            reader.tile(11, 3, 2, "jpeg", 75)  # frames not fetched yet
        assert time.monotonic() - started < 2 * 0.5 + 0.1 + 2.0  # 2 timeouts + backoff
        proxy.set_mode("normal")
        assert reader.tile(11, 3, 2, "jpeg", 75)[:2] == b"\xff\xd8"
    finally:
        reader.close()


def test_listing_never_waits_on_a_stalled_pacs_once_it_has_one(
        dicom_slides: Slides, orthanc_pacs: OrthancServer,
        proxy_factory: Callable[..., TcpProxy]) -> None:
    """A stale listing is served at once while a refresh runs in the background; the very
    first one is waited for at most LIST_WAIT, then the store is left out (unavailable)."""
    from readers import dicomweb_store

    proxy = proxy_factory("127.0.0.1", orthanc_pacs.port, rtt=0.0)
    store = DicomWebStore("pacs", f"dicomweb+{proxy.url}/dicom-web", user=PACS_USER,
                          password=PACS_PASSWORD, timeout=1.0, retries=0)
    listing = store.list()
    assert len(listing) == 4
    proxy.set_mode("stall")
    store._listing = (time.monotonic() - dicomweb_store.LIST_TTL - 1, listing)
    started = time.monotonic()
    assert store.list() is listing  # stale, served without waiting for the PACS
    assert time.monotonic() - started < 0.5
    fresh = DicomWebStore("pacs", f"dicomweb+{proxy.url}/dicom-web", user=PACS_USER,
                          password=PACS_PASSWORD, timeout=30.0, retries=0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        fresh.list()
    assert time.monotonic() - started < dicomweb_store.LIST_WAIT + 1.0
    proxy.set_mode("normal")


FIXTURES = Path(__file__).resolve().parents[2] / ".cache" / "openslide-fixtures"


@pytest.mark.parametrize("geometry", [(254, 1), (16, 0), (16, 3)])
def test_openslides_own_dicom_fixture(geometry: tuple[int, int], tmp_path: Path,
                                      orthanc_pacs: OrthancServer) -> None:
    """OpenSlide's boxes_0.dcm/boxes_1.dcm (openslide-python's sdist, fetched by setup):
    baseline JPEG frames with an RGB photometric (decoded as RGB whatever the stream
    says), a 64 px frame over a 16 px image, an ICC profile and a THUMBNAIL instance."""
    files = [FIXTURES / "boxes_0.dcm", FIXTURES / "boxes_1.dcm"]
    if not all(f.is_file() for f in files):
        pytest.skip("OpenSlide's fixtures missing (./scripts/setup fetches them)")
    local_dir = tmp_path / "boxes"
    local_dir.mkdir()
    for f in files:
        shutil.copy(f, local_dir / f.name)
    with OrthancServer() as pacs:
        pacs.upload(files)
        study, series = series_uids(files)
        tile_size, overlap = geometry
        factory = ReaderFactory(Settings(stores=f"pacs={pacs.dicomweb_url},local={tmp_path}",
                                         tile_size=tile_size, overlap=overlap))
        remote = factory.open(f"pacs/{study}/{series}")
        local = factory.open("local/boxes/boxes_0.dcm")
        try:
            a, b = remote.describe(), local.describe()
            for key in ("dz_dimensions", "dz_tiles", "level_dimensions", "level_downsamples",
                        "mpp_x", "objective_power"):
                assert a[key] == b[key], key
            assert a["properties"]["openslide.icc-size"] == b["properties"]["openslide.icc-size"]
            assert a["associated"] == ["thumbnail"]
            for level, (cols, rows) in enumerate(a["dz_tiles"]):
                for col in range(cols):
                    for row in range(rows):
                        for fmt in ("png", "jpeg"):
                            assert remote.tile(level, col, row, fmt, 75) == \
                                local.tile(level, col, row, fmt, 75), (level, col, row, fmt)
        finally:
            remote.close()
            local.close()


def test_reopening_a_slide_reuses_the_pacs_connection(
        dicom_slides: Slides, orthanc_pacs: OrthancServer,
        proxy_factory: Callable[..., TcpProxy]) -> None:
    """An open asks each instance's stored syntax by fetching its first frame; reading that
    frame to its end keeps the kept-alive connection (closed unread, every open of a slide
    paid new connections: 704 -> 75 in bench_dicomweb's round-robin row)."""
    proxy = proxy_factory("127.0.0.1", orthanc_pacs.port, rtt=0.0)
    factory = _factory(f"dicomweb+{proxy.url}/dicom-web", "/nonexistent")
    slide = f"pacs/{dicom_slides['jpeg'].rel}"
    factory.open(slide).close()
    first = proxy.stats().connections
    for _ in range(3):
        factory.open(slide).close()
    assert first >= 1 and proxy.stats().connections == first
