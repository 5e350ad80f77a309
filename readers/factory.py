"""The one place slide readers are opened: from a slide id, through its store.

Every caller (a worker's request handler, a gateway's stored-tile reads) asks a
``ReaderFactory`` for a ``SlideReader`` and never opens slide files itself, so a new
kind of store or reader is added here once and reaches every path.
"""

from __future__ import annotations

import time

import openslide

from config.settings import Settings
from readers.base import SlideReader
from readers.local_store import LocalStore
from readers.openslide_reader import OpenSlideReader
from readers.stored_levels import DecodedTiles


class ReaderFactory:
    """Opens readers for one process, sharing that process's decode caches.

    ``render=False`` is for a process that only serves stored tiles (a gateway): no
    OpenSlide block cache and no decoded-tile cache are kept for it.
    """

    def __init__(self, settings: Settings, *, render: bool = True) -> None:
        self.settings = settings
        self.store = LocalStore(settings.slides)
        self._osr_cache = (openslide.OpenSlideCache(settings.openslide_cache_bytes)
                           if render else None)
        self.decoded = (DecodedTiles(settings.decoded_cache_bytes)
                        if render and settings.decoded_cache_bytes > 0 else None)

    def open(self, slide: str) -> SlideReader:
        """An open reader for ``slide``; Forbidden/SlideNotFound/BadSlide as the store and
        the reader report them."""
        path = self.store.local_path(slide)
        s = self.settings
        if s.open_latency:  # simulates slow storage so benchmarks price opens realistically
            time.sleep(s.open_latency)
        return OpenSlideReader(path, tile_size=s.tile_size, overlap=s.overlap,
                               limit_bounds=s.limit_bounds, cache=self._osr_cache, name=slide,
                               passthrough=s.passthrough, decoded=self.decoded)

    def list(self) -> list[dict[str, object]]:
        """Every slide the store holds, as ``{"path", "name", "size"}``."""
        return self.store.list()
