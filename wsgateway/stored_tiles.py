"""Stored-tile passthrough in the gateway: a stored JPEG tile costs one ``os.pread`` here.

When a DeepZoom tile *is* a stored JPEG tile of the file (``readers/passthrough.py``),
serving it takes microseconds, less than relaying it through the router and a worker
costs. So a gateway that can read the slide root keeps a small LRU of passthrough
indexes and answers those tiles itself; everything else (edge tiles, levels OpenSlide
resamples, other formats, slides it cannot read) goes to the router as usual.

An index is built off the event loop (a thread opens the slide and parses the TIFF);
until it is ready, requests for that slide are relayed. A slide whose index cannot be
built is remembered as "no passthrough", so the gateway never retries it per request.
"""

from __future__ import annotations

import asyncio
import logging

import openslide
from cachetools import LRUCache, TTLCache
from openslide.deepzoom import DeepZoomGenerator

from config.settings import Settings
from readers.passthrough import PassthroughIndex
from readers.paths import resolve_slide_path

log = logging.getLogger(__name__)

FAILED_SLIDES = 1024
FAILED_RETRY_S = 60.0


class _ClosingLRU(LRUCache):
    def popitem(self) -> tuple[str, PassthroughIndex | None]:
        key, index = super().popitem()
        if index is not None:
            index.close()
        return key, index


class StoredTiles:
    """Passthrough indexes by slide key, for the gateway's event loop thread only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = (settings.gateway_stored_tiles and settings.passthrough
                        and settings.overlap == 0)
        self._indexes = _ClosingLRU(max(1, settings.reader_cache_size))
        # slides whose index could not be built (missing, unreadable): not retried for a
        # while, and kept apart so that bad names never evict good indexes
        self._failed: TTLCache[str, bool] = TTLCache(FAILED_SLIDES, FAILED_RETRY_S)
        self._building: set[str] = set()
        self.hits = 0

    def tile(self, request: dict[str, object]) -> bytes | None:
        """The stored bytes for a validated tile request, or None: relay it instead."""
        fmt = request.get("format") or self.settings.tile_format
        if (not self.enabled or request.get("op") != "tile" or fmt != "jpeg"
                or request.get("prefetch")):  # a prefetch wants no bytes back
            return None
        slide = str(request["slide"])
        try:
            index = self._indexes[slide]
        except KeyError:
            if slide not in self._failed:
                self._build_soon(slide)
            return None
        if index is None:
            return None
        data = index.stored_tile(request["level"], request["col"], request["row"])  # type: ignore[arg-type]
        if data is not None:
            self.hits += 1
        return data

    def _build_soon(self, slide: str) -> None:
        if slide in self._building:
            return
        self._building.add(slide)
        future = asyncio.get_running_loop().run_in_executor(None, build_index,
                                                            self.settings, slide)
        future.add_done_callback(lambda f: self._built(slide, f))

    def _built(self, slide: str, future: asyncio.Future[PassthroughIndex | None]) -> None:
        self._building.discard(slide)
        if future.cancelled() or future.exception() is not None:
            # not ours to report: the worker answers this slide's errors to the client
            log.debug("no gateway passthrough for %r: %s", slide,
                      "cancelled" if future.cancelled() else future.exception())
            self._failed[slide] = True
            return
        index = future.result()  # None: a readable slide with nothing to pass through
        if self.enabled:
            self._indexes[slide] = index
        elif index is not None:
            index.close()

    def close(self) -> None:
        self.enabled = False
        while self._indexes:
            self._indexes.popitem()


def build_index(settings: Settings, slide: str) -> PassthroughIndex | None:
    """Open the slide just long enough to index its stored tiles; None if it has none.

    Raises when the slide cannot be opened (the worker reports that to the client)."""
    path = resolve_slide_path(settings.slides, slide)
    with openslide.OpenSlide(path) as osr:
        dz = DeepZoomGenerator(osr, settings.tile_size, settings.overlap,
                               settings.limit_bounds)
        return PassthroughIndex.build(path, osr, dz, settings.tile_size, settings.limit_bounds)
