"""DeepZoom regions cut from a slide's stored JPEG tiles, decoded here.

Why: OpenSlide's ``read_region`` costs about 0.75 ms for a 256x256 region even when its
cache holds the tiles (it paints ARGB through cairo), and ``DeepZoomGenerator`` then
composites that onto a background (0.3 ms): most of a rendered tile's cost besides the
JPEG decode itself. Where a DeepZoom tile is read 1:1 from a stored JPEG level, decoding
the stored tiles (libjpeg-turbo through simplejpeg, at the defaults OpenSlide uses too:
islow DCT, fancy upsampling; identical pixels, tested on every tile of six colour-space
variants) and pasting them gives the same image for less.
Decoded tiles are kept in a worker-wide LRU (``DecodedTiles``): neighbouring DeepZoom
tiles share stored tiles (a 254/1 tile touches four).

Only levels the passthrough rules vouch for are used (vendors, JPEG flavour, colour
space); a slide with an ICC profile, a sparse tile, a stream this module won't vouch for
or a decode error returns None and the caller renders through OpenSlide as before (so a
tile whose bytes are not a JPEG still gets OpenSlide's read error).

Damaged data that still parses: libjpeg only warns about corrupt entropy-coded data
(premature end of a data segment, bad Huffman codes, extraneous bytes) and decodes
garbage; OpenSlide turns those warnings into errors, and so does this module: it decodes
with simplejpeg's ``strict=True`` (Pillow and imagecodecs ignore the warnings and offer no
way to ask), so a damaged tile raises ValueError, which the reader reports as bad_slide.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import openslide
import simplejpeg
import tifffile
from cachetools import LRUCache
from PIL import Image

from readers.passthrough import (
    MAX_TILE_BYTES,
    VENDORS,
    StoredLevel,
    open_indexed,
    standalone_jpeg,
    stored_level,
    tiled_pages,
)

_ICC_SIZE = "openslide.icc-size"  # set by OpenSlide when the slide has an ICC profile
_BYTES_PER_PIXEL = 4  # Pillow keeps RGB as 32 bits a pixel


class DecodedTiles:
    """Decoded stored tiles of every reader of a worker, bounded in bytes (as Pillow holds
    them: 4 bytes a pixel)."""

    def __init__(self, maxbytes: int) -> None:
        self._lru: LRUCache = LRUCache(
            max(1, maxbytes), getsizeof=lambda im: im.width * im.height * _BYTES_PER_PIXEL)
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Image.Image | None:
        image = self._lru.get(key)
        if image is None:
            self.misses += 1
        else:
            self.hits += 1
        return image

    @property
    def bytes(self) -> int:
        """Bytes held now (for the worker's metrics)."""
        return int(self._lru.currsize)

    def put(self, key: Hashable, image: Image.Image) -> None:
        if image.width * image.height * _BYTES_PER_PIXEL <= self._lru.maxsize:
            self._lru[key] = image

    def discard(self, owner: Hashable) -> None:
        """Forget the tiles of one closed reader (keys start with its owner token)."""
        for key in [k for k in self._lru if k[0] == owner]:
            del self._lru[key]


class StoredLevels:
    """The stored JPEG levels of one slide, keyed by OpenSlide level; see the module doc.

    Holds the file open and reads with ``os.pread``; not thread-safe (a reader's)."""

    def __init__(self, fh: Any, levels: dict[int, tuple[StoredLevel, int, int]],
                 cache: DecodedTiles, slide: openslide.AbstractSlide) -> None:
        self._fh = fh
        self._fd = fh.fileno()
        self._levels = levels  # level -> (StoredLevel, level width, level height)
        self._downsamples = tuple(slide.level_downsamples)
        self._cache = cache
        self._owner = object()  # cache keys of this reader only
        self.rendered = 0  # regions served from stored tiles (tests, stats)

    @property
    def levels(self) -> list[int]:
        return sorted(self._levels)

    @classmethod
    def build(cls, path: str, slide: openslide.AbstractSlide, cache: DecodedTiles
              ) -> StoredLevels | None:
        """The index of ``slide``'s usable stored JPEG levels, or None if there are none."""
        props = slide.properties
        if props.get(openslide.PROPERTY_NAME_VENDOR) not in VENDORS:
            return None
        if props.get(_ICC_SIZE):  # OpenSlide attaches the profile to what it renders
            return None  # (and reading it here would fail on a profile Pillow can't parse)
        opened = open_indexed(path, lambda fh: _index(fh, slide), "stored-tile rendering")
        return cls(opened[0], opened[1], cache, slide) if opened is not None else None

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]
                    ) -> Image.Image | None:
        """``OpenSlide.read_region``'s pixels (as RGB; all opaque) or None. Only where the
        level-0 ``location`` falls on a whole pixel of ``level``: then OpenSlide reads
        exactly from ``location / downsample`` too, with no sub-pixel shift."""
        down = self._downsamples[level]
        x0, y0 = location
        if not (down.is_integer() and x0 % down == 0 and y0 % down == 0):
            return None
        return self.region(level, int(x0 // down), int(y0 // down), *size)

    def region(self, level: int, x: int, y: int, w: int, h: int) -> Image.Image | None:
        """RGB pixels of ``level`` at (x, y), w x h (level coordinates), or None."""
        entry = self._levels.get(level)
        if entry is None:
            return None
        lv, width, height = entry
        ts = lv.tile_size
        if not (0 <= x <= width - w and 0 <= y <= height - h and w > 0 and h > 0):
            return None
        canvas = Image.new("RGB", (w, h))
        for ty in range(y // ts, (y + h - 1) // ts + 1):
            for tx in range(x // ts, (x + w - 1) // ts + 1):
                tile = self._decoded(level, lv, ts, ty * lv.across + tx)
                if tile is None:
                    return None
                canvas.paste(tile, (tx * ts - x, ty * ts - y))  # Pillow clips to the canvas
        self.rendered += 1
        return canvas

    def _decoded(self, level: int, lv: StoredLevel, ts: int, i: int) -> Image.Image | None:
        key = (self._owner, level, i)
        tile = self._cache.get(key)
        if tile is not None:
            return tile
        count = lv.counts[i]
        if not 0 < count <= MAX_TILE_BYTES:
            return None  # sparse (OpenSlide makes it transparent) or corrupt
        try:
            data = os.pread(self._fd, count, lv.offsets[i])
        except OSError:
            return None
        jpeg = standalone_jpeg(data, lv, ts) if len(data) == count else None
        if jpeg is None:
            return None
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(jpeg)
        except ValueError:
            return None  # OpenSlide renders it (and reports the damage)
        if colorspace not in ("YCbCr", "RGB") or (width, height) != (ts, ts):
            return None
        # strict: a warning from libjpeg (corrupt data) is an error, as in OpenSlide;
        # islow DCT and fancy upsampling are Pillow's and OpenSlide's defaults too
        pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", fastdct=False,
                                        fastupsample=False, strict=True)
        tile = Image.fromarray(pixels, "RGB")
        self._cache.put(key, tile)
        return tile

    def close(self) -> None:
        self._levels = {}  # never pread a closed (possibly reused) descriptor
        self._cache.discard(self._owner)
        self._fh.close()


def _index(fh: Any, slide: openslide.AbstractSlide) -> dict[int, tuple[StoredLevel, int, int]]:
    levels: dict[int, tuple[StoredLevel, int, int]] = {}
    with tifffile.TiffFile(fh) as tif:  # a handle we opened ourselves is left open
        pages = tiled_pages(tif)
        for level, dimensions in enumerate(slide.level_dimensions):
            found = stored_level(pages, dimensions, None)
            if found is not None:
                levels[level] = (found, *dimensions)
    return levels
