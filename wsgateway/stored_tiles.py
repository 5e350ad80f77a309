"""Stored-tile passthrough in the gateway: a stored JPEG tile costs one ``os.pread`` here.

When a DeepZoom tile *is* a stored JPEG tile of the file (``SlideReader.stored_tile``),
serving it takes microseconds, less than relaying it through the router and a worker
costs. So a gateway that can read the slide store keeps a small LRU of readers (opened
by the same ``ReaderFactory`` as the workers', without render caches) and answers those
tiles itself; everything else (edge tiles, levels OpenSlide resamples, other formats,
slides it cannot read) goes to the router as usual.

A reader is opened off the event loop (a thread opens the slide and parses the TIFF);
until it is ready, requests for that slide are relayed. A slide that cannot be opened
is remembered as failed for a while, so the gateway never retries it per request.
"""

from __future__ import annotations

import asyncio
import logging

from cachetools import LRUCache, TTLCache

from config.settings import Settings
from readers.base import SlideReader
from readers.factory import ReaderFactory

log = logging.getLogger(__name__)

FAILED_SLIDES = 1024
FAILED_RETRY_S = 60.0


class _ClosingLRU(LRUCache):
    def popitem(self) -> tuple[str, SlideReader]:
        key, reader = super().popitem()
        reader.close()
        return key, reader


class StoredTiles:
    """Readers by slide id, for the gateway's event loop thread only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = (settings.gateway_stored_tiles and settings.passthrough
                        and settings.overlap == 0)
        self._factory = ReaderFactory(settings, render=False) if self.enabled else None
        if self._factory is not None and not self._factory.mounts.all_local:
            self.enabled, self._factory = False, None  # remote slides: workers fetch them
        self._readers = _ClosingLRU(max(1, settings.reader_cache_size))
        # slides that could not be opened (missing, unreadable): not retried for a
        # while, and kept apart so that bad names never evict good readers
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
            reader = self._readers[slide]
        except KeyError:
            if slide not in self._failed:
                self._open_soon(slide)
            return None
        data = reader.stored_tile(request["level"], request["col"], request["row"])  # type: ignore[arg-type]
        if data is not None:
            self.hits += 1
        return data

    def status(self, slide: str) -> str | None:
        """"open", "failed", "opening", or None for a slide not seen (or evicted)."""
        if slide in self._readers:
            return "open"
        if slide in self._failed:
            return "failed"
        return "opening" if slide in self._building else None

    def _open_soon(self, slide: str) -> None:
        if slide in self._building or self._factory is None:
            return
        self._building.add(slide)
        future = asyncio.get_running_loop().run_in_executor(None, self._factory.open, slide)
        future.add_done_callback(lambda f: self._opened(slide, f))

    def _opened(self, slide: str, future: asyncio.Future[SlideReader]) -> None:
        self._building.discard(slide)
        if future.cancelled() or future.exception() is not None:
            # not ours to report: the worker answers this slide's errors to the client
            log.debug("no gateway passthrough for %r: %s", slide,
                      "cancelled" if future.cancelled() else future.exception())
            self._failed[slide] = True
            return
        reader = future.result()
        if self.enabled:
            self._readers[slide] = reader
        else:
            reader.close()

    def close(self) -> None:
        self.enabled = False
        while self._readers:
            self._readers.popitem()

