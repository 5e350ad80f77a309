"""Slides in a real S3 server (moto) and a real web server (nginx), read through the
latency/fault proxy: byte-identical to the same files on a local disk, and faults
answered with stable codes."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from readers.demo_slide import write_demo_slide
from scripts.benchlib.remote_servers import NginxServer, S3Server, write_manifest
from scripts.benchlib.system import System
from scripts.benchlib.tcpproxy import Mode, TcpProxy
from workers.handler import RequestHandler

SECRET = "s3cr3t-never-logged"
SLIDES = ("demo.svs", "a.tiff", "sub/b.tiff")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote-slides")
    write_demo_slide(root / "demo.svs", 2400, 1700, seed=3, aperio=True)
    write_demo_slide(root / "a.tiff", 1500, 1100, seed=4)
    (root / "sub").mkdir()
    write_demo_slide(root / "sub" / "b.tiff", 700, 500, seed=5)
    (root / "notaslide.tiff").write_bytes(b"II*\0" + b"\x07" * 5000)
    (root / "notaslide.ndpi").write_bytes(b"this is not a slide at all" * 100)
    write_manifest(root)
    return root


@pytest.fixture
def s3_store(s3_server: S3Server, folder: Path, proxy_factory: Callable[..., TcpProxy],
             monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
             ) -> Iterator[tuple[str, TcpProxy]]:
    """A fresh bucket holding ``folder``, reached through a 5 ms RTT proxy."""
    bucket = "b-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40].strip("-]")
    s3_server.upload_folder(bucket, folder, prefix="pre/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any secret
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    proxy = proxy_factory(s3_server.host, s3_server.port, rtt=0.005)
    yield f"s3://{bucket}/pre", proxy


@pytest.fixture
def http_store(folder: Path, nginx_factory: Callable[..., NginxServer],
               proxy_factory: Callable[..., TcpProxy]) -> Iterator[tuple[str, TcpProxy]]:
    server = nginx_factory(folder)
    proxy = proxy_factory(server.host, server.port, rtt=0.005)
    yield proxy.url + "/", proxy


@pytest.fixture(params=["s3", "http"])
def store(request: pytest.FixtureRequest) -> tuple[str, TcpProxy, str]:
    url, proxy = request.getfixturevalue(f"{request.param}_store")
    return url, proxy, request.param


def _handler(url: str, proxy: TcpProxy, tmp_path: Path, **overrides: Any) -> RequestHandler:
    settings = dict(slides=url, s3_endpoint_url=proxy.url, remote_cache_dir=str(tmp_path),
                    remote_timeout=2.0, remote_retries=1)
    return RequestHandler(Settings(**{**settings, **overrides}))


def _all(handler: RequestHandler, slide: str, info: dict[str, Any], fmt: str
         ) -> Iterator[tuple[tuple[int, int, int], bytes | None]]:
    for level in range(info["dz_levels"]):
        cols, rows = info["dz_tiles"][level]
        for col in range(cols):
            for row in range(rows):
                header, data = handler.safe_handle({"op": "tile", "slide": slide, "level": level,
                                                    "col": col, "row": row, "format": fmt})
                assert header["ok"], (slide, level, col, row, header)
                yield (level, col, row), data


@pytest.mark.parametrize("geometry", [(254, 1), (256, 0)])
def test_every_tile_and_image_equals_the_local_file(store: tuple[str, TcpProxy, str],
                                                    folder: Path, tmp_path: Path,
                                                    geometry: tuple[int, int]) -> None:
    url, proxy, _ = store
    ts, overlap = geometry
    remote = _handler(url, proxy, tmp_path, tile_size=ts, overlap=overlap)
    local = RequestHandler(Settings(slides=str(folder), tile_size=ts, overlap=overlap))
    try:
        listed = {s["path"] for s in remote.safe_handle({"op": "list"})[0]["slides"]}
        assert set(SLIDES) <= listed and "index.json" not in listed
        for slide in SLIDES:
            info = remote.safe_handle({"op": "info", "slide": slide})[0]
            assert info == local.safe_handle({"op": "info", "slide": slide})[0]
            fmt = "png" if slide == "sub/b.tiff" else "jpeg"
            assert dict(_all(remote, slide, info, fmt)) == dict(_all(local, slide, info, fmt))
            for name in ["thumbnail", *info["associated"]]:
                req = {"op": "associated", "slide": slide, "name": name, "size": 200}
                got, want = remote.safe_handle(req), local.safe_handle(req)
                assert got[0]["ok"] and got == want, (slide, name)
            req = {"op": "region", "slide": slide, "x": 100, "y": 150, "w": 1000, "h": 700,
                   "out_w": 250, "out_h": 175, "format": "jpeg", "quality": "default",
                   "rotation": 0, "mirror": False}
            assert remote.safe_handle(req) == local.safe_handle(req)
        assert "label" in remote.safe_handle({"op": "info", "slide": "demo.svs"})[0]["associated"]
        stats = remote.factory.mounts.stats()["slides"]
        assert stats["ranged_requests"] > 0 and stats["errors"] == 0
        # read by ranges: far less than the files (most tiles are fetched, not all bytes)
        assert remote.factory.mounts.stats()["fetch_cache"]["fetches"] == 0
    finally:
        remote.close()
        local.close()


def test_missing_and_bad_objects(store: tuple[str, TcpProxy, str], tmp_path: Path) -> None:
    url, proxy, kind = store
    handler = _handler(url, proxy, tmp_path)
    try:
        if kind == "http":  # the test nginx answers 503 under /broken/: retried, then given up
            header, _ = handler.safe_handle({"op": "info", "slide": "broken/a.tiff"})
            assert header["error"]["code"] == "unavailable", header
            assert handler.factory.mounts.stats()["slides"]["errors"] >= 2
        for slide, code in [("missing.svs", "not_found"), ("sub/missing.tiff", "not_found"),
                            ("notaslide.tiff", "bad_slide"), ("notaslide.ndpi", "bad_slide"),
                            ("../escape.tiff", "forbidden")]:
            header, _ = handler.safe_handle({"op": "info", "slide": slide})
            assert header["error"]["code"] == code, (slide, header)
        assert handler.safe_handle({"op": "info", "slide": "a.tiff"})[0]["ok"]
    finally:
        handler.close()


@pytest.mark.parametrize("mode", [Mode.CUT, Mode.RESET, Mode.STALL])
def test_a_dead_store_is_unavailable_then_recovers(s3_store: tuple[str, TcpProxy],
                                                   tmp_path: Path, mode: Mode,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    url, proxy = s3_store
    handler = _handler(url, proxy, tmp_path, remote_timeout=0.5, remote_retries=1)
    caplog.set_level(logging.DEBUG)
    try:
        proxy.set_mode(mode)
        header, _ = handler.safe_handle({"op": "info", "slide": "a.tiff"})
        assert header["error"]["code"] == "unavailable", header
        assert "127.0.0.1" not in header["error"]["message"]
        proxy.set_mode(Mode.NORMAL)
        header, _ = handler.safe_handle({"op": "info", "slide": "a.tiff"})
        assert header["ok"], header
        ours = "\n".join(r.getMessage() for r in caplog.records
                         if r.name.startswith(("readers", "workers")))
        assert "did not answer" in json.dumps(handler.factory.mounts.stats()) or ours
        text = caplog.text + json.dumps(handler.factory.mounts.stats()) + json.dumps(header)
        assert SECRET not in text  # not even in botocore's own debug lines
        assert "127.0.0.1" not in ours and url not in ours  # our lines name no endpoint
    finally:
        handler.close()


def test_an_open_slide_replaced_in_the_store_is_reopened(s3_server: S3Server,
                                                         s3_store: tuple[str, TcpProxy],
                                                         folder: Path, tmp_path: Path) -> None:
    url, proxy = s3_store
    bucket = url[5:].split("/")[0]
    handler = _handler(url, proxy, tmp_path, remote_revalidate=0.0)
    local = RequestHandler(Settings(slides=str(folder)))
    req = {"op": "tile", "slide": "a.tiff", "level": 10, "col": 0, "row": 0}
    try:
        before = handler.safe_handle(req)
        assert before == local.safe_handle(req)
        replacement = tmp_path / "replacement" / "a.tiff"
        replacement.parent.mkdir()
        write_demo_slide(replacement, 1500, 1100, seed=99)  # same size, other pixels
        s3_server.replace_object(bucket, "pre/a.tiff", replacement.read_bytes())
        after = handler.safe_handle(req)
        other = RequestHandler(Settings(slides=str(replacement.parent)))
        try:
            assert after == other.safe_handle(req) and after != before
        finally:
            other.close()
    finally:
        handler.close()
        local.close()


def test_named_stores_are_folders_of_one_listing(s3_store: tuple[str, TcpProxy],
                                                 folder: Path, tmp_path: Path) -> None:
    url, proxy = s3_store
    local_copy = tmp_path / "local"
    shutil.copytree(folder / "sub", local_copy)
    handler = RequestHandler(Settings(
        stores=f"bucket={url},disk={local_copy}", s3_endpoint_url=proxy.url,
        remote_cache_dir=str(tmp_path / "cache")))
    try:
        paths = {s["path"] for s in handler.safe_handle({"op": "list"})[0]["slides"]}
        assert {"bucket/demo.svs", "bucket/sub/b.tiff", "disk/b.tiff"} <= paths
        for slide in ("bucket/sub/b.tiff", "disk/b.tiff"):
            assert handler.safe_handle({"op": "info", "slide": slide})[0]["width"] == 700
        header, _ = handler.safe_handle({"op": "info", "slide": "nostore/b.tiff"})
        assert header["error"]["code"] == "not_found"
    finally:
        handler.close()


def test_the_whole_system_serves_a_bucket(s3_store: tuple[str, TcpProxy], folder: Path,
                                          tmp_path: Path) -> None:
    """Router, workers and gateway as real processes, slides from S3: the viewer's paths
    (websocket, DZI, IIIF) give the local file's bytes; /stats shows the remote reads."""
    url, proxy = s3_store
    local = RequestHandler(Settings(slides=str(folder)))
    system = System(url, workers=2, s3_endpoint_url=proxy.url,
                    remote_cache_dir=str(tmp_path)).start()
    try:
        system.wait_ready()
        ws = system.ws()
        try:
            header, data = ws.tile("demo.svs", 10, 1, 1)
            assert header["ok"] and data == local.handle(
                {"op": "tile", "slide": "demo.svs", "level": 10, "col": 1, "row": 1})[1]
        finally:
            ws.close()
        status, _, body = system.get("/dz/sub/b.tiff.dzi")
        assert status == 200 and b'Width="700"' in body
        status, _, body = system.get("/dz/sub/b.tiff_files/9/0_0.jpeg")
        assert status == 200 and body == local.handle(
            {"op": "tile", "slide": "sub/b.tiff", "level": 9, "col": 0, "row": 0})[1]
        status, _, body = system.get("/iiif/a.tiff/info.json")
        assert status == 200 and json.loads(body)["width"] == 1500
        status, _, body = system.get("/iiif/a.tiff/0,0,600,400/300,/0/default.png")
        assert status == 200 and body == local.handle(
            {"op": "region", "slide": "a.tiff", "x": 0, "y": 0, "w": 600, "h": 400,
             "out_w": 300, "out_h": 200, "format": "png", "quality": "default",
             "rotation": 0, "mirror": False})[1]
        remote = [w.get("remote", {}).get("slides", {}) for w in system.stats()["workers"]]
        assert sum(r.get("ranged_requests", 0) for r in remote) > 0
        assert SECRET not in json.dumps(system.stats()) and SECRET not in system.logs()
    finally:
        system.stop()
        local.close()


FIXTURES = Path(__file__).resolve().parents[2] / ".cache" / "openslide-fixtures"


def test_openslides_own_fixtures_read_the_same_from_a_bucket(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSlide's test slides (from the openslide-python sdist, fetched by setup): every
    answer from S3, errors included, equals the local file's."""
    names = ["small.svs", "boxes.tiff", "unreadable.svs", "unopenable.tiff"]
    if not all((FIXTURES / n).is_file() for n in names):
        pytest.skip(f"{FIXTURES} missing (./scripts/setup fetches openslide-python's fixtures)")
    local_root = tmp_path / "fixtures"
    local_root.mkdir()
    for name in names:
        shutil.copy(FIXTURES / name, local_root / name)
    s3_server.upload_folder("openslide-fixtures", local_root)
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", SECRET),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    remote = RequestHandler(Settings(slides="s3://openslide-fixtures",
                                     s3_endpoint_url=s3_server.endpoint_url,
                                     remote_cache_dir=str(tmp_path / "cache")))
    local = RequestHandler(Settings(slides=str(local_root)))
    try:
        for name in names:
            info = local.safe_handle({"op": "info", "slide": name})
            assert remote.safe_handle({"op": "info", "slide": name}) == info, name
            if not info[0]["ok"]:
                continue
            for level in range(info[0]["dz_levels"]):
                cols, rows = info[0]["dz_tiles"][level]
                for col in range(cols):
                    for row in range(rows):
                        req = {"op": "tile", "slide": name, "level": level, "col": col,
                               "row": row}
                        assert remote.safe_handle(req) == local.safe_handle(req), req
            for image in ["thumbnail", *info[0]["associated"]]:
                req = {"op": "associated", "slide": name, "name": image, "size": 128}
                assert remote.safe_handle(req) == local.safe_handle(req), req
    finally:
        remote.close()
        local.close()
