"""Where slide ids point: one unnamed store (``slides``) or several named ones (``stores``).

With named stores a slide id is ``NAME/path`` and the listing shows each store as a
top-level folder; without, ids are paths in the one store, as they always were. A
browser only ever names ids: the URL, bucket or host behind a store stays here.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from config.errors import SlideNotFound, TileRouterError
from config.lists import store_entries
from config.settings import Settings
from readers.dicomweb_store import DicomWebStore, is_dicomweb
from readers.fetch_cache import FetchCache
from readers.frame_cache import FrameCache
from readers.local_store import LocalStore
from readers.remote_store import RemoteStore
from readers.slide_ids import normalize_slide_path

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3://", "http://", "https://", "dicomweb+http://", "dicomweb+https://")


class SlideStore(Protocol):
    """What a store does for readers: a local file to open (with its version, None when
    always current), and its slides."""

    def local_copy(self, slide: str) -> tuple[str, str | None]: ...

    def list(self) -> list[dict[str, object]]: ...


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_SCHEMES)


def missing_local_roots(settings: Settings) -> list[str]:
    """The local store folders in ``settings`` that do not exist (a start-up check; remote
    stores are checked when first read)."""
    entries = store_entries(settings.stores)
    urls = [e.partition("=")[2] for e in entries] if entries else [settings.slides]
    return [u for u in urls if not is_remote(u) and not os.path.isdir(u)]


class Mounts:
    """The stores of one process, built from settings."""

    def __init__(self, settings: Settings) -> None:
        self._cache: FetchCache | None = None
        self.frames = FrameCache(settings.dicomweb_frame_cache_bytes)  # DICOMweb stores'
        self._settings = settings
        entries = store_entries(settings.stores)
        self.named: dict[str, SlideStore | DicomWebStore] = {}
        self.unnamed: SlideStore | DicomWebStore | None = None
        if entries:
            for entry in entries:
                name, _, url = entry.partition("=")
                self.named[name] = self._store(name, url)
        else:
            self.unnamed = self._store("", settings.slides)

    @property
    def all_local(self) -> bool:
        """True when every store is a local folder (so any process can read its files)."""
        stores = [self.unnamed] if self.unnamed is not None else list(self.named.values())
        return all(isinstance(s, LocalStore) for s in stores)

    def _store(self, name: str, url: str) -> SlideStore | DicomWebStore:
        if not is_remote(url):
            return LocalStore(url)
        if is_dicomweb(url):
            s = self._settings
            return DicomWebStore(name, url, token=s.dicomweb_token, user=s.dicomweb_user,
                                 password=s.dicomweb_password, timeout=s.remote_timeout,
                                 retries=s.remote_retries, frames=self.frames)
        if self._cache is None:
            s = self._settings
            self._cache = FetchCache(s.remote_cache_dir, s.remote_cache_bytes)
        s = self._settings
        return RemoteStore(name, url, self._cache, endpoint_url=s.s3_endpoint_url,
                           timeout=s.remote_timeout, retries=s.remote_retries,
                           mirror_bytes=s.remote_mirror_bytes)

    def resolve(self, slide: str) -> tuple[SlideStore | DicomWebStore, str]:
        """The store holding ``slide`` and the id inside it (Forbidden for bad syntax)."""
        rel = normalize_slide_path(slide)
        if self.unnamed is not None:
            return self.unnamed, rel
        name, _, rest = rel.partition("/")
        store = self.named.get(name)
        if store is None or not rest:
            raise SlideNotFound(f"no slide {rel!r}: no store named {name!r}")
        return store, rest

    def local_copy(self, slide: str) -> tuple[str, str | None]:
        store, rel = self.resolve(slide)
        if isinstance(store, DicomWebStore):
            raise SlideNotFound(f"{slide!r} is read over DICOMweb, not as a file")
        return store.local_copy(rel)

    def version(self, slide: str) -> str | None:
        """The remote version of ``slide`` (None for local stores: always current)."""
        store, rel = self.resolve(slide)
        return store.version(rel) if isinstance(store, RemoteStore) else None

    def list(self) -> list[dict[str, object]]:
        """Every store's slides; a named store's ids carry its name. A store that cannot
        be listed right now is left out (logged), so one dead store hides no other."""
        if self.unnamed is not None:
            return self.unnamed.list()
        slides: list[dict[str, object]] = []
        for name, store in self.named.items():
            try:
                listed = store.list()
            except TileRouterError as exc:
                log.warning("store %r not listed: %s", name, exc.message)
                continue
            slides += [{**s, "path": f"{name}/{s['path']}"} for s in listed]
        return slides

    def stats(self) -> dict[str, Any]:
        """Remote calls and fetch-cache counters per remote store."""
        out: dict[str, Any] = {}
        stores = {"": self.unnamed} if self.unnamed is not None else self.named
        for name, store in stores.items():
            if isinstance(store, RemoteStore | DicomWebStore):
                out[name or "slides"] = store.stats()
        if self._cache is not None:
            out["fetch_cache"] = {"hits": self._cache.hits, "fetches": self._cache.fetches,
                                  "fetched_bytes": self._cache.fetched_bytes}
        return out
