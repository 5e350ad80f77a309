"""Slides in a PACS: a DICOMweb server (QIDO-RS to list, WADO-RS to read frames).

A store URL is ``dicomweb+http(s)://host:port/prefix`` (the server's DICOMweb root). A slide
is one whole-slide-image series, its id ``<StudyInstanceUID>/<SeriesInstanceUID>`` inside
the store (``NAME/<study>/<series>`` with named stores). UIDs are checked for syntax
(``[0-9.]{1,64}``) before anything is sent, so a browser can never make a worker send the
PACS a path or query of its choosing.

Credentials (a bearer token, or a user and password) come from the settings
(``dicomweb_token``, ``dicomweb_user``/``dicomweb_password``, or ``TILEROUTER_DICOMWEB_*``),
never from a client, and appear in no message, log line or stat: like ``remote_store``,
messages name the store and the slide id only. Every call has a timeout and is retried
``remote_retries`` times with backoff, then reported ``unavailable``; dicomweb-client's own
retry loop (up to minutes of waiting) is turned off so the bound is ours.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from requests.auth import AuthBase, HTTPBasicAuth
from wsidicom import WsiDicom, WsiDicomWebClient

from config.errors import BadSlide, SlideNotFound, TileRouterError, Unavailable
from readers.dicomweb_entries import (
    MODALITY,
    NAME_FIELDS,
    SERIES,
    SERIES_NUMBER,
    STUDY,
    UID,
    list_entry,
    value_of,
)
from readers.frame_cache import FrameCache

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEMES = ("dicomweb+http://", "dicomweb+https://")
LIST_TTL = 30.0  # seconds a listing is served before it is refreshed (in the background)
LIST_WAIT = 5.0  # seconds a list request waits for a refresh before answering without it
PAGE = 1000  # series per QIDO page (servers cap it anyway: Orthanc 100 by default)
MAX_LISTED = 1_000_000
BACKOFF = 0.1  # first retry delay; doubles per retry
ICC_PROFILE = "00282000"
ANY_SYNTAX = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
PROBE_CHUNK = 64 * 1024
PROBE_READ_CHUNKS = 64  # a first frame larger than 4 MiB is left unread (connection closed)
_SYNTAX = re.compile(rb"transfer-syntax=\"?([0-9.]+)")
# pydicom says this for every instance's metadata a PACS sends with bulk data by URI
# (wsidicom reads none of it) and once per open about a deprecated call wsidicom makes:
# a worker's log would hold little else
_QUIET = ("No bulk data URI handler", "get_frame_offsets is deprecated")
warnings.filterwarnings("ignore", message=_QUIET[0])


class _QuietPydicom(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET)


logging.getLogger("pydicom").addFilter(_QuietPydicom())


def is_dicomweb(url: str) -> bool:
    return url.startswith(SCHEMES)


def split_slide_id(rel: str) -> tuple[str, str]:
    """``study/series`` -> the two UIDs; SlideNotFound for anything else (checked before
    any request is made)."""
    parts = rel.split("/")
    if len(parts) != 2 or not all(UID.fullmatch(p) for p in parts):
        raise SlideNotFound(f"no slide {rel!r}: ids in a DICOMweb store are "
                            "<StudyInstanceUID>/<SeriesInstanceUID>")
    return parts[0], parts[1]


class _Bearer(AuthBase):
    """``Authorization: Bearer <token>`` on every request (requests' own hook, so the token
    is never part of a URL, a header dict that dicomweb-client logs, or a message)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r

    def __repr__(self) -> str:
        return "_Bearer(<redacted>)"


class _TimeoutSession(requests.Session):
    """A session whose every request has a timeout: dicomweb-client passes none, and one
    silent PACS must not hold a worker forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class DicomWebStore:
    """One DICOMweb server holding slides (one per series of modality SM)."""

    def __init__(self, name: str, url: str, *, token: str = "", user: str = "",
                 password: str = "", timeout: float = 10.0, retries: int = 3,
                 frames: FrameCache | None = None) -> None:
        if not is_dicomweb(url):
            raise ValueError("a DICOMweb store URL starts with dicomweb+http(s)://")
        parts = urlsplit(url.removeprefix("dicomweb+"))
        self.name = name or "slides"
        self.path = parts.path.rstrip("/")
        self.base = urlunsplit((parts.scheme, parts.netloc, self.path, "", ""))
        self.retries = retries
        self.page_size = PAGE  # series per QIDO request
        self.frames = frames if frames is not None else FrameCache(64 << 20)
        self.session = _TimeoutSession(timeout)
        if token:
            self.session.auth = _Bearer(token)
        elif user:
            self.session.auth = HTTPBasicAuth(user, password)
        client = DICOMwebClient(self.base, session=self.session)
        client.set_http_retry_params(retry=False)  # ours are bounded and logged
        self.client = client
        self.round_trips = 0
        self.errors = 0
        self.frames_fetched = 0
        self.remote_seconds = 0.0
        self._count_lock = threading.Lock()
        self._list_lock = threading.Lock()
        self._listing: tuple[float, list[dict[str, object]]] | None = None
        self._refresh: threading.Thread | None = None
        self._list_error: TileRouterError | None = None

    # --- reading -----------------------------------------------------------------------

    def open(self, rel: str) -> tuple[WsiDicom, dict[str, Any]]:
        """The series ``rel`` opened by wsidicom over WADO-RS, and its QIDO attributes.

        not_found when the series does not exist, bad_slide when it is not a whole-slide
        image (another modality, or no VOLUME instances wsidicom can use)."""
        study, series = split_slide_id(rel)
        found = self.call(rel, self.client.search_for_series,
                          search_filters={STUDY: study, SERIES: series},
                          fields=list(NAME_FIELDS))
        if not found:
            raise SlideNotFound(f"no slide {rel!r} in store {self.name!r}")
        attrs = found[0]
        if value_of(attrs, MODALITY) != "SM":
            raise BadSlide(f"{rel!r} in store {self.name!r} is not a slide microscopy series")
        try:
            wsi = WsiDicom.open_web(_Client(self, rel), study, series)
        except TileRouterError:
            raise
        except Exception as exc:  # wsidicom's own errors, malformed metadata
            raise BadSlide(f"{rel!r} in store {self.name!r} is not a readable whole-slide "
                           f"image: {type(exc).__name__}") from None
        if not wsi.levels:
            wsi.close()
            raise BadSlide(f"{rel!r} in store {self.name!r} has no pyramid levels")
        return wsi, attrs

    # --- listing -----------------------------------------------------------------------

    def list(self) -> list[dict[str, object]]:
        """The store's WSI series as ``{"path", "name", "size"}``, sorted by path.

        A listing is kept ``LIST_TTL`` seconds. A stale or missing one is refetched in a
        background thread (one at a time, a page of ``PAGE`` series per QIDO request) and
        the stale one is served meanwhile, at once: only the very first listing is
        waited for, at most ``LIST_WAIT`` seconds, so a slow or huge PACS delays no list
        request longer than that, and a PACS that is down keeps its last listing."""
        with self._list_lock:
            listing = self._listing
            if listing is not None and time.monotonic() - listing[0] < LIST_TTL:
                return listing[1]
            if self._refresh is None or not self._refresh.is_alive():
                self._list_error = None
                self._refresh = threading.Thread(target=self._refresh_listing, daemon=True,
                                                 name=f"qido-{self.name}")
                self._refresh.start()
            if listing is not None:
                return listing[1]
            refresh = self._refresh
        refresh.join(LIST_WAIT)
        with self._list_lock:
            if self._listing is not None:
                return self._listing[1]
            if self._list_error is not None:
                raise self._list_error
        raise Unavailable(f"store {self.name!r} is still being listed")

    def _refresh_listing(self) -> None:
        try:
            slides = self._fetch_listing()
        except TileRouterError as exc:
            with self._list_lock:
                self._list_error = exc
            return
        except Exception as exc:  # a malformed answer must not kill the thread silently
            log.warning("store %r: listing failed (%s)", self.name, type(exc).__name__)
            with self._list_lock:
                self._list_error = Unavailable(f"store {self.name!r} could not be listed")
            return
        with self._list_lock:
            self._listing = (time.monotonic(), slides)

    def _fetch_listing(self) -> list[dict[str, object]]:
        """Every SM series, a page at a time. A page is asked at the offset of what has
        arrived (a server may cap a page below the asked limit: Orthanc at 100); the
        loop ends on an empty page, or one that brings nothing new (a server that ignores
        ``offset``), and after at most ``MAX_LISTED`` series."""
        slides: dict[str, dict[str, object]] = {}
        offset = 0
        while offset < MAX_LISTED:  # bounded: every pass adds at least one series
            page = self.call("", self.client.search_for_series, limit=self.page_size,
                             offset=offset, search_filters={MODALITY: "SM"},
                             fields=[*NAME_FIELDS, SERIES_NUMBER])
            before = len(slides)
            for attrs in page:
                entry = list_entry(attrs)
                if entry is not None:
                    slides[str(entry["path"])] = entry
            if not page or len(slides) == before:
                break
            offset += len(page)
        return [slides[k] for k in sorted(slides)]

    # --- remote calls ------------------------------------------------------------------

    def call(self, rel: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` with bounded retries. 404 is not_found, other 4xx bad_slide and
        401/403 unavailable (the store's credentials are wrong: retrying cannot help);
        5xx, resets and timeouts are retried, then unavailable."""
        delay = BACKOFF
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status == 404:
                    raise SlideNotFound(f"no slide {rel!r} in store {self.name!r}") from None
                if status in (401, 403):
                    raise Unavailable(f"store {self.name!r} refused tilerouter's credentials"
                                      ) from None
                if 400 <= status < 500:
                    raise BadSlide(f"store {self.name!r} refused a request for {rel!r} "
                                   f"(HTTP {status})") from None
                what = f"HTTP {status}"
            except (requests.RequestException, OSError) as exc:
                what = type(exc).__name__
            finally:
                with self._count_lock:
                    self.round_trips += 1
                    self.remote_seconds += time.monotonic() - started
            with self._count_lock:
                self.errors += 1
            log.warning("store %r: %s on %r (attempt %d of %d)", self.name, what, rel,
                        attempt + 1, self.retries + 1)
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise Unavailable(f"store {self.name!r} did not answer for {rel!r} after "
                          f"{self.retries + 1} attempts")

    def stored_syntax(self, rel: str, study: str, series: str, instance: str) -> str | None:
        """The transfer syntax an instance's frames are stored in, asked with
        ``transfer-syntax=*`` (the server then sends frames as stored): a PACS asked for
        JPEG transcodes lossless frames to lossy ones, so we ask for what is stored."""
        url = f"{self.base}/studies/{study}/series/{series}/instances/{instance}/frames/1"

        def probe() -> str | None:
            with self.session.get(url, headers={"Accept": ANY_SYNTAX}, stream=True) as r:
                r.raise_for_status()
                found = _SYNTAX.search(r.headers.get("Content-Type", "").encode())
                chunks = r.iter_content(PROBE_CHUNK)
                if found is None:  # some servers name it in the part's own headers only
                    found = _SYNTAX.search(next(chunks, b""))
                # read the frame to its end (it is one tile): a response closed unread
                # takes its connection with it, and each open would pay a new one
                for _ in zip(range(PROBE_READ_CHUNKS), chunks, strict=False):
                    pass
                return found.group(1).decode() if found else None

        try:
            return self.call(rel, probe)
        except BadSlide:  # the server does not know '*' (406): let wsidicom choose
            return None

    def count_frames(self, n: int) -> None:
        with self._count_lock:
            self.frames_fetched += n

    def stats(self) -> dict[str, Any]:
        return {"round_trips": self.round_trips, "errors": self.errors,
                "frames_fetched": self.frames_fetched,
                "remote_seconds": round(self.remote_seconds, 3),
                "frame_cache": self.frames.stats()}


class _Client(WsiDicomWebClient):
    """wsidicom's DICOMweb client with our retries, the per-worker frame cache, frames in
    their stored transfer syntax, and no annotation lookups (a round trip we never use)."""

    def __init__(self, store: DicomWebStore, rel: str) -> None:
        super().__init__(store.client)
        self.store = store
        self.rel = rel
        self._syntax: dict[str, str | None] = {}

    def get_wsi_instances(self, study_uid: Any, series_uids: Iterable[Any]
                          ) -> Iterator[tuple[Any, Any, set[Any] | None]]:
        series = list(series_uids)
        return iter(self.store.call(self.rel, lambda: list(
            super(_Client, self).get_wsi_instances(study_uid, series))))

    def get_annotation_instances(self, study_uid: Any, series_uids: Iterable[Any]
                                 ) -> Iterator[tuple[Any, Any, set[Any] | None]]:
        return iter(())

    def get_instance(self, study_uid: Any, series_uid: Any, instance_uid: Any) -> Any:
        """The instance's metadata, with its ICC profile fetched (a bulk data URI in the
        JSON) so tiles carry it as OpenSlide's do; other bulk data is left out."""
        meta = self.store.call(self.rel, self.store.client.retrieve_instance_metadata,
                               study_uid, series_uid, instance_uid)
        return Dataset.from_json(meta, bulk_data_uri_handler=self._bulk)

    def _bulk(self, tag: str, vr: str, uri: str) -> bytes | None:
        """Only the store's own resource is fetched, whatever host the URI names (our
        session would send credentials anywhere; and servers build the URI from a Host
        header dicomweb-client sends without the port)."""
        path = urlsplit(uri).path
        if tag.upper() != ICC_PROFILE or not path.startswith(self.store.path + "/"):
            return None
        url = self.store.base + path[len(self.store.path):]
        parts = self.store.call(self.rel, self.store.client.retrieve_bulkdata, url,
                                media_types=("application/octet-stream",))
        return bytes(parts[0]) if parts else None

    def is_transfer_syntax_supported(self, study_uid: Any, series_uid: Any,
                                     instance_uid: Any, transfer_syntax: Any) -> bool:
        key = str(instance_uid)
        if key not in self._syntax:
            self._syntax[key] = self.store.stored_syntax(self.rel, str(study_uid),
                                                         str(series_uid), key)
        stored = self._syntax[key]
        return stored is None or stored == str(transfer_syntax)

    def get_frames(self, study_uid: Any, series_uid: Any, instance_uid: Any,
                   frame_indices: list[int], transfer_syntax: Any) -> Iterator[bytes]:
        """Frames from the cache, the missing ones in one WADO-RS request."""
        cache = self.store.frames
        keys = [(str(instance_uid), int(i), str(transfer_syntax)) for i in frame_indices]
        have = {k: cache.get(k) for k in keys}
        missing = [k for k in keys if have[k] is None]
        if missing:
            fetch = super().get_frames
            frames = self.store.call(self.rel, lambda: list(fetch(
                study_uid, series_uid, instance_uid, [k[1] for k in missing],
                transfer_syntax)))
            if len(frames) != len(missing):
                raise Unavailable(f"store {self.store.name!r} sent {len(frames)} of "
                                  f"{len(missing)} frames for {self.rel!r}")
            self.store.count_frames(len(frames))
            for k, frame in zip(missing, frames, strict=True):
                data = bytes(frame)
                have[k] = data
                cache.put(k, data)
        return iter([have[k] for k in keys])  # type: ignore[misc]
