"""Slides in object storage (S3 and compatible) or behind a web server (HTTP Range).

Both go through fsspec (s3fs for S3, aiohttp for HTTP): ``info`` gives an object's
size and ETag, ``get_file`` fetches it. A remote call that fails for any reason but
"no such object" is retried with backoff, ``remote_retries`` times, then reported as
``unavailable`` (never ``bad_slide``: the slide may be fine, the store is not).
Messages name the store and the slide id, never a URL: URLs can carry credentials.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests

from config.errors import Forbidden, SlideNotFound, TileRouterError, Unavailable
from readers.fetch_cache import FetchCache
from readers.slide_ids import is_slide_name, normalize_slide_path
from readers.tiff_layout import RemoteTiff

log = logging.getLogger(__name__)

T = TypeVar("T")
LIST_TTL = 30.0  # seconds a store's listing is reused before it is fetched again
MAX_LISTED = 1_000_000  # a listing is cached and paged, so large stores are fine
BACKOFF = 0.1  # first retry delay; doubles per retry


class RemoteStore:
    """One remote store: ``s3://bucket/prefix`` or an ``http(s)://`` base URL."""

    def __init__(self, name: str, url: str, cache: FetchCache, *, endpoint_url: str = "",
                 timeout: float = 10.0, retries: int = 3, mirror_bytes: int = 1 << 62) -> None:
        self.name = name or "slides"
        self.url = url
        self.cache = cache
        self.retries = retries
        self.timeout = timeout
        self.mirror_bytes = mirror_bytes
        parts = urlsplit(url)
        self.scheme = parts.scheme
        if self.scheme == "s3":
            self.base = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")
            self.fs = _s3_filesystem(endpoint_url, timeout)
        elif self.scheme in ("http", "https"):
            self.base = url.rstrip("/")
            self.fs = _http_filesystem(timeout)
            self._session = requests.Session()
        else:
            raise ValueError(f"unsupported store URL scheme {self.scheme!r}")
        self.round_trips = 0  # remote calls, each one round trip of latency (a batch counts once)
        self.ranged_requests = 0  # ranged GETs inside those batches
        self.ranged_bytes = 0
        self.errors = 0
        self.remote_seconds = 0.0
        self._listing: tuple[float, list[dict[str, object]]] | None = None
        self._lock = threading.Lock()

    # --- the store interface ------------------------------------------------------------

    def local_copy(self, slide: str) -> tuple[str, str | None]:
        """A complete local copy of ``slide``'s current version (fetched if needed), and
        that version."""
        rel = normalize_slide_path(slide)
        info = self._info(rel)
        version = _version(info)
        suffix = posixpath.splitext(rel)[1].lower()
        path = self.cache.fetch(self._object(rel), version, suffix, int(info["size"]),
                                lambda dst: self._call(rel, self.fs.get_file,
                                                       self._object(rel), dst))
        return path, version

    def mirror(self, slide: str) -> tuple[RemoteTiff, str]:
        """``slide`` (a TIFF) opened through a sparse local mirror filled by ranged reads,
        and its version. BadSlide-free: any parse failure raises ValueError/OSError, and
        the caller falls back to ``local_copy``."""
        rel = normalize_slide_path(slide)
        info = self._info(rel)
        obj = self._object(rel)

        def fetch(starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
            self.ranged_requests += len(starts)
            self.ranged_bytes += sum(ends) - sum(starts)
            return self._call(rel, self._ranges, obj, list(starts), list(ends))

        suffix = posixpath.splitext(rel)[1].lower()
        remote = RemoteTiff(int(info["size"]), fetch, self.cache.root, suffix,
                            self.mirror_bytes)
        return remote, _version(info)

    def version(self, slide: str) -> str:
        """The current version (ETag, else size and date) of ``slide`` in the store."""
        return _version(self._info(normalize_slide_path(slide)))

    def list(self) -> list[dict[str, object]]:
        """Slides in the store (S3: by prefix; HTTP: the base URL's ``index.json``),
        fetched at most once per ``LIST_TTL`` seconds."""
        with self._lock:
            now = time.monotonic()
            if self._listing is not None and now - self._listing[0] < LIST_TTL:
                return self._listing[1]
            slides = self._list_s3() if self.scheme == "s3" else self._list_manifest()
            slides = sorted(slides, key=lambda s: str(s["path"]))[:MAX_LISTED]
            self._listing = (now, slides)
            return slides

    def stats(self) -> dict[str, Any]:
        return {"round_trips": self.round_trips, "ranged_requests": self.ranged_requests,
                "ranged_bytes": self.ranged_bytes, "errors": self.errors,
                "remote_seconds": round(self.remote_seconds, 3)}

    # --- remote calls --------------------------------------------------------------------

    def _object(self, rel: str) -> str:
        if self.scheme == "s3":
            return f"{self.base}/{rel}"
        return f"{self.base}/{quote(rel)}"

    def _ranges(self, obj: str, starts: list[int], ends: list[int]) -> list[bytes]:
        """One batch of concurrent ranged GETs; a short answer is an error (retried)."""
        parts = self.fs.cat_ranges([obj] * len(starts), starts, ends, on_error="raise")
        for start, end, part in zip(starts, ends, parts, strict=True):
            if len(part) != end - start:
                raise OSError(f"ranged read returned {len(part)} of {end - start} bytes")
        return parts

    def _info(self, rel: str) -> dict[str, Any]:
        info = self._call(rel, self._http_head if self.scheme != "s3" else self.fs.info,
                          self._object(rel))
        if info.get("type") == "directory" or info.get("size") is None:
            raise SlideNotFound(f"no slide {rel!r} in store {self.name!r}")
        return info

    def _http_head(self, url: str) -> dict[str, Any]:
        """Size and ETag from a HEAD on a kept-alive connection (a new one would cost a
        handshake round trip per open): 404/410 is "no such object" (FileNotFoundError),
        any other failure an error to retry (fsspec's own ``info`` calls a 5xx a missing
        file)."""
        resp = self._session.head(url, timeout=self.timeout, allow_redirects=True)
        if resp.status_code in (404, 410):
            raise FileNotFoundError(rel_of(url))
        if resp.status_code >= 300:
            raise OSError(f"HTTP {resp.status_code}")
        size = resp.headers.get("Content-Length")
        return {"size": int(size) if size is not None else None,
                "ETag": resp.headers.get("ETag"),
                "LastModified": resp.headers.get("Last-Modified")}

    def _list_s3(self) -> list[dict[str, object]]:
        found = self._call("", self.fs.find, self.base, detail=True)
        slides = []
        for key, info in found.items():
            rel = key[len(self.base):].lstrip("/")
            if rel and is_slide_name(posixpath.basename(rel)):
                slides.append({"path": rel, "name": posixpath.basename(rel),
                               "size": int(info.get("size") or 0)})
        return slides

    def _list_manifest(self) -> list[dict[str, object]]:
        raw = self._call("index.json", self.fs.cat_file, f"{self.base}/index.json")
        try:
            entries = json.loads(raw)["slides"]
        except (ValueError, KeyError, TypeError):
            raise Unavailable(f"store {self.name!r}: index.json is not a slide manifest"
                              ) from None
        slides = []
        for entry in entries if isinstance(entries, list) else []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            try:
                rel = normalize_slide_path(str(path))
            except TileRouterError:
                continue  # a manifest entry that could escape the base is never listed
            size = entry.get("size", 0) if isinstance(entry, dict) else 0
            slides.append({"path": rel, "name": posixpath.basename(rel),
                           "size": size if isinstance(size, int) else 0})
        return slides

    def _call(self, rel: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` with bounded retries; SlideNotFound and Forbidden are final."""
        delay = BACKOFF
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            self.round_trips += 1
            try:
                return fn(*args, **kwargs)
            except FileNotFoundError:
                raise SlideNotFound(f"no slide {rel!r} in store {self.name!r}") from None
            except PermissionError:
                raise Forbidden(f"store {self.name!r} refused access to {rel!r}") from None
            except Exception as exc:  # network errors, 5xx, timeouts: all retried
                self.errors += 1
                what = type(exc).__name__
                log.warning("store %r: %s on %r (attempt %d of %d)", self.name, what, rel,
                            attempt + 1, self.retries + 1)
            finally:
                self.remote_seconds += time.monotonic() - started
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise Unavailable(f"store {self.name!r} did not answer for {rel!r} after "
                          f"{self.retries + 1} attempts")


def rel_of(url: str) -> str:
    """The last path component of a URL: what a message may name (never the URL)."""
    return posixpath.basename(urlsplit(url).path)


def _version(info: dict[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag)
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or ''}"


def _s3_filesystem(endpoint_url: str, timeout: float) -> Any:
    import s3fs  # imported here: a deployment with only local stores needs no S3 stack

    kwargs: dict[str, Any] = {
        "use_listings_cache": False,  # a replaced object must show its new ETag
        "skip_instance_cache": True,
        "config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout,
                          "retries": {"max_attempts": 1}},
    }
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return s3fs.S3FileSystem(**kwargs)


def _http_filesystem(timeout: float) -> Any:
    import aiohttp
    import fsspec

    return fsspec.filesystem(
        "http", skip_instance_cache=True, use_listings_cache=False,
        client_kwargs={"timeout": aiohttp.ClientTimeout(sock_connect=timeout,
                                                        sock_read=timeout)})
