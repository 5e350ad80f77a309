"""DICOMweb store basics that need no PACS: ids, settings, credentials, refusals."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from config.errors import SlideNotFound, Unavailable
from config.settings import Settings
from readers.dicomweb_store import DicomWebStore, split_slide_id
from readers.factory import ReaderFactory
from readers.mounts import Mounts, missing_local_roots
from workers.serve import free_port

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A real HTTP server that answers every QIDO search with an empty list and records
    the Authorization headers it got."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(self.headers.get("Authorization"))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"dicomweb+http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("rel", [
    "abc/def", f"{STUDY}", f"{STUDY}/{SERIES}/x", f"{STUDY}/1.2.3a", "1" * 65 + f"/{SERIES}",
    f"{STUDY}/{SERIES}/", f"{STUDY}/ 1.2",
])
def test_malformed_uids_are_not_found_before_any_request(rel: str) -> None:
    port = free_port()  # nothing listens: a request would be retried, then 'unavailable'
    store = DicomWebStore("pacs", f"dicomweb+http://127.0.0.1:{port}/dicom-web", retries=0)
    with pytest.raises(SlideNotFound):
        store.open(rel)
    assert store.round_trips == 0


def test_slide_id_is_study_then_series() -> None:
    assert split_slide_id(f"{STUDY}/{SERIES}") == (STUDY, SERIES)


def test_store_setting_and_slides_accept_dicomweb_urls(tmp_path: object) -> None:
    s = Settings(stores="pacs=dicomweb+https://pacs.example:8042/dicom-web,local=/nonexistent")
    mounts = Mounts(s)
    store, rel = mounts.resolve(f"pacs/{STUDY}/{SERIES}")
    assert isinstance(store, DicomWebStore) and rel == f"{STUDY}/{SERIES}"
    assert store.base == "https://pacs.example:8042/dicom-web"
    assert missing_local_roots(s) == ["/nonexistent"]  # the PACS is not a folder
    unnamed = Mounts(Settings(slides="dicomweb+http://127.0.0.1:1/dicom-web"))
    assert isinstance(unnamed.unnamed, DicomWebStore) and not unnamed.all_local


def test_unreachable_pacs_is_unavailable_after_bounded_retries() -> None:
    port = free_port()
    s = Settings(stores=f"pacs=dicomweb+http://127.0.0.1:{port}/dicom-web", remote_retries=1,
                 remote_timeout=1.0)
    factory = ReaderFactory(s)
    with pytest.raises(Unavailable) as err:
        factory.open(f"pacs/{STUDY}/{SERIES}")
    assert "127.0.0.1" not in err.value.message and str(port) not in err.value.message
    store = factory.mounts.named["pacs"]
    assert isinstance(store, DicomWebStore) and store.round_trips == 2


def test_bearer_token_is_sent_and_never_shown(recorder: str) -> None:
    s = Settings(stores=f"pacs={recorder}", dicomweb_token="tok-SECRET-1")
    factory = ReaderFactory(s)
    with pytest.raises(SlideNotFound):  # the recorder knows no series
        factory.open(f"pacs/{STUDY}/{SERIES}")
    assert _Recorder.seen == ["Bearer tok-SECRET-1"]
    store = factory.mounts.named["pacs"]
    assert "SECRET" not in repr(store.session.auth) and "SECRET" not in str(store.stats())


def test_basic_auth_from_user_and_password(recorder: str) -> None:
    s = Settings(stores=f"pacs={recorder}", dicomweb_user="u", dicomweb_password="p")
    assert ReaderFactory(s).list() == []
    assert _Recorder.seen == ["Basic dTpw"]


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch, recorder: str) -> None:
    from config.settings import parse_cli

    monkeypatch.setenv("TILEROUTER_DICOMWEB_TOKEN", "from-env")
    s, _ = parse_cli("test", ["--store", f"pacs={recorder}"])
    assert s.dicomweb_token == "from-env" and s.stores == f"pacs={recorder}"


def test_frame_cache_is_an_lru_bounded_in_bytes() -> None:
    from readers.frame_cache import FrameCache

    cache = FrameCache(10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"90ab")  # 12 bytes > 10: b (least recent) goes
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.nbytes == 8
    cache.put("huge", b"x" * 11)  # larger than the cache: never kept
    assert cache.get("huge") is None and len(cache) == 2
    assert cache.stats() == {"hits": 2, "misses": 2, "bytes": 8, "frames": 2}


def test_only_streams_a_browser_reads_as_ycbcr_pass_through() -> None:
    import io

    from PIL import Image, ImageCms

    from readers.dicom_frames import standalone_ycbcr

    image = Image.new("RGB", (16, 16), (200, 100, 50))

    def jpeg(**options: object) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "jpeg", **options)
        return buf.getvalue()

    plain = jpeg()
    assert standalone_ycbcr(plain)  # JFIF: YCbCr
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert not standalone_ycbcr(jpeg(icc_profile=srgb))  # APP2: never passed through
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    no_jfif = plain[:2] + plain[4 + int.from_bytes(plain[4:6], "big"):]
    assert standalone_ycbcr(no_jfif)  # no marker, ids 1,2,3: libjpeg reads YCbCr
    assert not standalone_ycbcr(no_jfif[:2] + adobe_rgb + no_jfif[2:])  # Adobe says RGB
    assert not standalone_ycbcr(b"not a jpeg")
