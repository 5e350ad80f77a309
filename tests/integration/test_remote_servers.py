"""The real remote stores the S3/HTTP readers are tested against, checked on their own:
moto's S3 and nginx answer ranged reads with exactly the bytes asked, also through the
latency proxy, and the proxy's faults reach an HTTP client as the errors a reader must
handle. If these fail, a reader test failing on top of them says nothing about the reader."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from scripts.benchlib.remote_servers import NginxServer, S3Server, write_manifest
from scripts.benchlib.tcpproxy import Mode, TcpProxy

RTT = 0.02
TIMEOUT = 5.0

NginxFactory = Callable[..., NginxServer]
ProxyFactory = Callable[..., TcpProxy]


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_s3_put_get_range_list_through_latency_proxy(
        s3_server: S3Server, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(s3_server.host, s3_server.port, rtt=RTT)
    c = s3_server.client(proxy.url)
    bucket = _bucket()
    data = os.urandom(200_000)
    c.create_bucket(Bucket=bucket)
    etag = c.put_object(Bucket=bucket, Key="dir/a.svs", Body=data)["ETag"]

    assert c.get_object(Bucket=bucket, Key="dir/a.svs")["Body"].read() == data
    t0 = time.monotonic()
    part = c.get_object(Bucket=bucket, Key="dir/a.svs", Range="bytes=100000-100999")
    body = part["Body"].read()
    assert time.monotonic() - t0 >= RTT - 0.001  # the proxy's delay is on the path
    assert body == data[100_000:101_000]
    assert part["ContentRange"] == f"bytes 100000-100999/{len(data)}"
    assert part["ETag"] == etag

    listing = c.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listing] == [("dir/a.svs", len(data))]
    stats = proxy.stats()
    assert stats.connections >= 1
    assert stats.bytes_up > len(data) and stats.bytes_down > len(data)


def test_s3_upload_folder_replace_and_delete(s3_server: S3Server, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.svs").write_bytes(b"a" * 1000)
    (tmp_path / "sub" / "b.tiff").write_bytes(b"b" * 300)
    (tmp_path / ".hidden").write_bytes(b"h")
    bucket = _bucket()
    keys = s3_server.upload_folder(bucket, tmp_path, prefix="slides/")
    assert keys == {"slides/a.svs": 1000, "slides/sub/b.tiff": 300}
    c = s3_server.client()
    old = c.head_object(Bucket=bucket, Key="slides/a.svs")["ETag"]
    new = s3_server.replace_object(bucket, "slides/a.svs", b"A" * 1200)
    assert new != old
    head = c.head_object(Bucket=bucket, Key="slides/a.svs")
    assert (head["ETag"], head["ContentLength"]) == (new, 1200)
    s3_server.delete_object(bucket, "slides/sub/b.tiff")
    listed = [o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == ["slides/a.svs"]


@pytest.fixture
def http_root(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    data = os.urandom(1000)
    (root / "a.svs").write_bytes(data)
    (root / "sub" / "b.tiff").write_bytes(b"b" * 10)
    return root, data


def _range_get(base: str, data: bytes) -> None:
    r = requests.get(f"{base}/a.svs", headers={"Range": "bytes=100-199"}, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert r.headers["ETag"]


def test_nginx_range_direct_and_through_proxy(
        http_root: tuple[Path, bytes], nginx_factory: NginxFactory,
        proxy_factory: ProxyFactory) -> None:
    root, data = http_root
    write_manifest(root)
    nginx = nginx_factory(root)
    _range_get(nginx.url, data)
    proxy = proxy_factory(nginx.host, nginx.port, rtt=RTT)
    t0 = time.monotonic()
    _range_get(proxy.url, data)
    assert time.monotonic() - t0 >= RTT - 0.001
    manifest = requests.get(f"{proxy.url}/index.json", timeout=TIMEOUT).json()
    assert manifest == {"slides": [{"path": "a.svs", "size": 1000},
                                   {"path": "sub/b.tiff", "size": 10}]}
    assert json.loads((root / "index.json").read_text()) == manifest
    assert requests.get(f"{nginx.url}/", timeout=TIMEOUT).status_code in (403, 404)  # no listing
    assert requests.get(f"{nginx.url}/missing.svs", timeout=TIMEOUT).status_code == 404


def test_proxy_reset_mid_transfer_is_a_connection_error(
        tmp_path: Path, nginx_factory: NginxFactory,
        proxy_factory: ProxyFactory) -> None:
    size = 64 << 20  # sparse: more than every buffer between nginx and the client holds
    with open(tmp_path / "big.svs", "wb") as fh:
        fh.truncate(size)
    nginx = nginx_factory(tmp_path, access_log=False)
    proxy = proxy_factory(nginx.host, nginx.port, rtt=0.0)
    got = 0
    with requests.get(f"{proxy.url}/big.svs", stream=True, timeout=TIMEOUT) as r, \
            pytest.raises(requests.exceptions.RequestException) as err:
        assert r.status_code == 200
        chunks = r.iter_content(64 * 1024)
        got += len(next(chunks))
        proxy.set_mode(Mode.RESET)
        for chunk in chunks:  # bounded: the file is finite, and the reset ends it early
            got += len(chunk)
    assert isinstance(err.value, (requests.exceptions.ChunkedEncodingError,
                                  requests.exceptions.ConnectionError)), err.value
    assert "reset" in str(err.value).lower(), err.value
    assert got < size


def test_proxy_stall_and_cut_as_seen_by_http(
        http_root: tuple[Path, bytes], nginx_factory: NginxFactory,
        proxy_factory: ProxyFactory) -> None:
    root, data = http_root
    nginx = nginx_factory(root)
    proxy = proxy_factory(nginx.host, nginx.port, rtt=0.0)
    proxy.set_mode(Mode.STALL)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{proxy.url}/a.svs", timeout=(TIMEOUT, 0.3))
    proxy.set_mode(Mode.CUT)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{proxy.url}/a.svs", timeout=TIMEOUT)
    proxy.set_mode(Mode.NORMAL)
    _range_get(proxy.url, data)
