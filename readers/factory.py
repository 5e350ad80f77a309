"""The one place slide readers are opened: from a slide id, through its store.

Every caller (a worker's request handler, a gateway's stored-tile reads) asks a
``ReaderFactory`` for a ``SlideReader`` and never opens slide files itself, so a new
kind of store or reader is added here once and reaches every path.
"""

from __future__ import annotations

import logging
import time

import openslide

from config.errors import TileRouterError
from config.settings import Settings
from readers.base import SlideReader
from readers.dicom_reader import DicomReader
from readers.dicomweb_store import DicomWebStore
from readers.mounts import Mounts
from readers.openslide_reader import OpenSlideReader
from readers.remote_store import RemoteStore
from readers.stored_levels import DecodedTiles
from readers.tiff_layout import MirrorUnsuitable, RemoteTiff

log = logging.getLogger(__name__)

RANGED_SUFFIXES = (".tif", ".tiff", ".svs")  # read by ranges when OpenSlide's vendor allows


class ReaderFactory:
    """Opens readers for one process, sharing that process's decode caches.

    ``render=False`` is for a process that only serves stored tiles (a gateway): no
    OpenSlide block cache and no decoded-tile cache are kept for it.
    """

    def __init__(self, settings: Settings, *, render: bool = True) -> None:
        self.settings = settings
        self.mounts = Mounts(settings)
        # slide -> (version it was opened at, time.monotonic() of the last check)
        self._versions: dict[str, tuple[str | None, float]] = {}
        self._osr_cache = (openslide.OpenSlideCache(settings.openslide_cache_bytes)
                           if render else None)
        self.decoded = (DecodedTiles(settings.decoded_cache_bytes)
                        if render and settings.decoded_cache_bytes > 0 else None)

    def open(self, slide: str) -> SlideReader:
        """An open reader for ``slide``; Forbidden/SlideNotFound/BadSlide as the store and
        the reader report them, Unavailable when a remote store cannot be reached.

        A TIFF-family slide in a remote store is read by ranges through a sparse mirror
        (``readers/tiff_layout.py``); any other remote slide is fetched whole first."""
        s = self.settings
        if s.open_latency:  # simulates slow storage so benchmarks price opens realistically
            time.sleep(s.open_latency)
        store, rel = self.mounts.resolve(slide)
        if isinstance(store, DicomWebStore):  # a WSI series in a PACS (dicom_reader.py)
            wsi, attrs = store.open(rel)
            return DicomReader(wsi, attrs, name=slide, tile_size=s.tile_size,
                               overlap=s.overlap, limit_bounds=s.limit_bounds,
                               passthrough=s.passthrough, decoded=self.decoded)
        if isinstance(store, RemoteStore) and rel.lower().endswith(RANGED_SUFFIXES):
            reader = self._open_ranged(store, rel, slide)
            if reader is not None:
                return reader
        path, version = store.local_copy(rel)
        self._versions[slide] = (version, time.monotonic())
        return self._reader(path, slide)

    def _open_ranged(self, store: RemoteStore, rel: str, slide: str) -> SlideReader | None:
        """The slide read through a mirror, or None when it must be fetched whole."""
        try:
            remote, version = store.mirror(rel)
        except TileRouterError:
            raise  # not found, unavailable: the same answer a whole fetch would give
        except Exception as exc:  # not a TIFF tifffile can walk: let OpenSlide judge it
            log.info("%s: reading it whole (%s)", slide, type(exc).__name__)
            return None
        try:
            reader = self._reader(remote.path, slide, remote)
        except MirrorUnsuitable:
            remote.close()
            return None
        except BaseException:
            remote.close()
            raise
        self._versions[slide] = (version, time.monotonic())
        return reader

    def _reader(self, path: str, slide: str, remote: RemoteTiff | None = None
                ) -> OpenSlideReader:
        s = self.settings
        return OpenSlideReader(path, tile_size=s.tile_size, overlap=s.overlap,
                               limit_bounds=s.limit_bounds, cache=self._osr_cache, name=slide,
                               passthrough=s.passthrough, decoded=self.decoded, remote=remote)

    def is_current(self, slide: str) -> bool:
        """False when ``slide``'s remote object changed (new ETag) since its reader was
        opened: the reader must be reopened. Checked at most every ``remote_revalidate``
        seconds; a store that cannot be asked keeps the open (complete) copy serving."""
        entry = self._versions.get(slide)
        if entry is None or entry[0] is None:
            return True  # local stores are always current
        version, checked = entry
        now = time.monotonic()
        if now - checked < self.settings.remote_revalidate:
            return True
        try:
            current = self.mounts.version(slide)
        except TileRouterError:
            return True
        self._versions[slide] = (version, now)
        return current == version

    def list(self) -> list[dict[str, object]]:
        """Every slide the stores hold, as ``{"path", "name", "size"}``."""
        return self.mounts.list()
