"""Stored-tile passthrough: serve a slide's own JPEG tiles when they *are* the DeepZoom tile.

A DeepZoom tile equals a stored tile exactly when the DeepZoom tile size equals the
file's tile size, overlap is 0, the DeepZoom level has the dimensions of a stored level
whose downsample is exactly 2**k (so OpenSlide reads it 1:1, no resampling), the
DeepZoom origin is the image origin (no ``openslide.bounds-*`` offset in use) and the
tile lies wholly inside the level (stored edge tiles are padded to full size, DeepZoom
edge tiles are cropped). Then the stored JPEG, made standalone by merging the TIFF's
JPEGTables into it, decodes to exactly the pixels ``DeepZoomGenerator.get_tile`` gives,
and serving it costs one ``os.pread`` instead of a decode and an encode.

Colour: OpenSlide decodes TIFF JPEG tiles in the colour space the TIFF's
PhotometricInterpretation names (RGB or YCbCr), whatever markers the JPEG carries; a
standalone decoder (Pillow, browsers: libjpeg's rules) only sees the stream: JFIF APP0
means YCbCr, else an Adobe APP14 transform flag decides (0 = RGB, 1 = YCbCr), else
component ids 'R','G','B' mean RGB, else YCbCr. Where the stream alone would be read in
the other colour space, an Adobe APP14 marker with the right flag is inserted; where a
marker contradicts the TIFF (JFIF or Adobe-YCbCr on an RGB IFD, Adobe-RGB on a YCbCr
IFD) the tile is not passed through. RGB output always carries an explicit Adobe
transform-0 marker, since decoders that don't guess from component ids would read YCbCr.

Anything unusual (other vendors' TIFF layouts, non-JPEG or non-8-bit data, APP1/APP2
metadata such as EXIF orientation or ICC profiles, lossless/arithmetic/hierarchical
JPEG) returns None from ``stored_tile`` and the caller renders the tile as usual.
"""

from __future__ import annotations

import logging
import math
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openslide
import tifffile

log = logging.getLogger(__name__)

# vendors whose OpenSlide levels are plain top-level tiled IFDs read 1:1 (no overlaps,
# no per-tile offsets, no stitching); others (ventana, trestle, philips, leica, ...) never
# pass through
VENDORS = frozenset({"generic-tiff", "aperio"})

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_DQT, _DHT, _SOS, _DRI, _COM, _APP0, _APP14 = 0xDB, 0xC4, 0xDA, 0xDD, 0xFE, 0xE0, 0xEE
_SOFS = frozenset({0xC0, 0xC1, 0xC2})  # Huffman baseline/extended/progressive: every decoder
_RGB_IDS = (0x52, 0x47, 0x42)  # 'R', 'G', 'B': libjpeg reads unmarked streams with these as RGB
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
MAX_TILE_BYTES = 64 << 20  # a bigger byte count is a corrupt IFD: leave it to OpenSlide


def _adobe(transform: int) -> bytes:
    """Adobe APP14: version 100, flags 0, the colour transform flag (0 RGB, 1 YCbCr)."""
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes((transform,))


_ADOBE_RGB, _ADOBE_YCBCR = _adobe(0), _adobe(1)


@dataclass(frozen=True)
class StoredLevel:
    """One stored level as a DeepZoom level serves it."""

    offsets: array  # 'Q', per tile, row-major
    counts: array
    across: int  # stored tiles per row
    full_cols: int  # tiles wholly inside the level (the rest are padded edge tiles)
    full_rows: int
    tables: bytes  # the JPEGTables' DQT/DHT segments (b"" when there are none)
    tables_dqt: bool  # ``tables`` holds quantisation tables
    tables_dht: bool  # ``tables`` holds Huffman tables
    rgb: bool  # PhotometricInterpretation RGB (else YCbCr)
    tile_size: int  # stored tiles are tile_size x tile_size (edge tiles padded)


def full_bounds(properties: Any, dimensions: tuple[int, int]) -> bool:
    """True when the ``openslide.bounds-*`` properties are absent or cover the whole image."""
    def prop(name: str, default: int) -> int:
        value = properties.get(name)
        try:
            return default if value is None else int(value)
        except ValueError:
            return -1
    return (prop(openslide.PROPERTY_NAME_BOUNDS_X, 0) == 0
            and prop(openslide.PROPERTY_NAME_BOUNDS_Y, 0) == 0
            and prop(openslide.PROPERTY_NAME_BOUNDS_WIDTH, dimensions[0]) == dimensions[0]
            and prop(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, dimensions[1]) == dimensions[1])


def table_segments(jpegtables: bytes) -> list[tuple[int, bytes]] | None:
    """(marker, segment) for the DQT and DHT segments of a JPEGTables stream, or None.

    SOI, EOI and anything else are dropped; None if the stream is malformed.
    """
    if not jpegtables.startswith(_SOI):
        return None
    out: list[tuple[int, bytes]] = []
    pos, n = 2, len(jpegtables)
    while pos + 2 <= n:
        if jpegtables[pos] != 0xFF:
            return None
        marker = jpegtables[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI[1]:
            break
        if pos + 4 > n:
            return None
        end = pos + 2 + int.from_bytes(jpegtables[pos + 2:pos + 4], "big")
        if end > n or end < pos + 4 or marker in _SOFS or marker == _SOS:
            return None
        if marker in (_DQT, _DHT):
            out.append((marker, jpegtables[pos:end]))
        pos = end
    return out


def standalone_jpeg(data: bytes, lv: StoredLevel, tile_size: int) -> bytes | None:
    """A stored tile as a complete JPEG decoding like OpenSlide decodes it, or None.

    The level's table segments go after the SOI and any APPn segments leading the
    stream, so a JFIF APP0 stays first. Returns None for a stream this module won't vouch
    for: not 8-bit 3-component Huffman JPEG of ``tile_size`` square, tables missing,
    markers that change how viewers show it, or a colour space contradicting the IFD's.
    """
    n = len(data)
    if not data.startswith(_SOI):
        return None
    pos = insert = 2
    leading = True
    jfif = have_dqt = have_dht = False
    adobe: int | None = None
    ids: tuple[int, int, int] | None = None
    while True:
        if pos + 4 > n or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > n or end < pos + 4:
            return None
        if marker == _SOS:
            break
        if 0xE0 <= marker <= 0xEF:
            if marker == _APP0:  # libjpeg takes it for JFIF only with 14 bytes of data
                jfif = jfif or (data[pos + 4:pos + 9] == b"JFIF\0" and end - pos - 4 >= 14)
            elif marker == _APP14 and data[pos + 4:pos + 9] == b"Adobe" and end - pos >= 16:
                adobe = data[pos + 15]
            else:  # APP1 EXIF (orientation!), APP2 ICC ...: viewers would not show our pixels
                return None
            if leading:
                insert = end
        else:
            leading = False
            if marker == _DQT:
                have_dqt = True
            elif marker == _DHT:
                have_dht = True
            elif marker in _SOFS:
                if (end - pos < 19 or data[pos + 4] != 8 or data[pos + 9] != 3
                        or int.from_bytes(data[pos + 5:pos + 7], "big") != tile_size
                        or int.from_bytes(data[pos + 7:pos + 9], "big") != tile_size):
                    return None
                ids = (data[pos + 10], data[pos + 13], data[pos + 16])
            elif marker not in (_DRI, _COM):
                return None  # lossless, arithmetic, hierarchical, DAC, DNL, a second SOI ...
        pos = end
    if ids is None or not (have_dqt or lv.tables_dqt) or not (have_dht or lv.tables_dht):
        return None
    if adobe not in (None, 0, 1):
        return None
    extra = b""
    if lv.rgb:  # the stream must say RGB explicitly
        if jfif or adobe == 1:
            return None
        if adobe is None:
            extra = _ADOBE_RGB
    elif not jfif and adobe is None and ids == _RGB_IDS:
        extra = _ADOBE_YCBCR  # libjpeg would guess RGB from the ids
    elif not jfif and adobe == 0:
        return None
    if not extra and not lv.tables:
        return data
    return b"".join((data[:insert], extra, lv.tables, data[insert:]))


class PassthroughIndex:
    """Per DeepZoom level that maps 1:1 onto a stored JPEG level: where its tiles are.

    Built once per reader (``build``); holds the slide file open and reads a tile with
    one ``os.pread`` (no shared file position, so ``stored_tile`` may run on any thread;
    ``close`` must not race it).
    """

    def __init__(self, fh: Any, levels: dict[int, StoredLevel], tile_size: int) -> None:
        self._fh = fh
        self._fd = fh.fileno()
        self._levels = levels
        self.tile_size = tile_size

    @property
    def dz_levels(self) -> list[int]:
        """DeepZoom levels that may pass stored tiles through."""
        return sorted(self._levels)

    @classmethod
    def build(cls, path: str, slide: openslide.AbstractSlide, dz: Any, tile_size: int,
              limit_bounds: bool) -> PassthroughIndex | None:
        """The index for ``dz`` (a DeepZoomGenerator with overlap 0), or None if no level fits.

        Cheap OpenSlide checks (vendor, bounds, level geometry, tile-size properties)
        come first; the TIFF is only parsed when some level can match.
        """
        props = slide.properties
        if props.get(openslide.PROPERTY_NAME_VENDOR) not in VENDORS:
            return None
        if limit_bounds and not full_bounds(props, slide.dimensions):
            return None
        wanted: dict[int, int] = {}  # dz level -> slide level
        count = dz.level_count
        for dz_level in range(count):
            down = 2 ** (count - 1 - dz_level)
            level = slide.get_best_level_for_downsample(down)
            if (slide.level_downsamples[level] == down
                    and tuple(slide.level_dimensions[level]) == tuple(dz.level_dimensions[dz_level])
                    and props.get(f"openslide.level[{level}].tile-width") == str(tile_size)
                    and props.get(f"openslide.level[{level}].tile-height") == str(tile_size)):
                wanted[dz_level] = level
        if not wanted:
            return None
        opened = open_indexed(path, lambda fh: _index_levels(fh, slide, wanted, tile_size),
                              "tile passthrough")
        return cls(opened[0], opened[1], tile_size) if opened is not None else None

    def stored_tile(self, dz_level: int, col: int, row: int) -> bytes | None:
        """The stored tile as a standalone JPEG if it is exactly this DeepZoom tile, else None."""
        lv = self._levels.get(dz_level)
        if lv is None or not (0 <= col < lv.full_cols and 0 <= row < lv.full_rows):
            return None
        i = row * lv.across + col
        count = lv.counts[i]
        if not 0 < count <= MAX_TILE_BYTES:
            return None  # sparse tile (OpenSlide makes it transparent) or a corrupt count
        try:
            data = os.pread(self._fd, count, lv.offsets[i])
        except OSError:
            return None  # let the render path report the read error
        if len(data) != count:
            return None  # truncated file
        return standalone_jpeg(data, lv, self.tile_size)

    def close(self) -> None:
        self._levels = {}  # never pread a closed (possibly reused) descriptor
        self._fh.close()


def open_indexed(path: str, index: Callable[[Any], dict[int, Any]], what: str
                 ) -> tuple[Any, dict[int, Any]] | None:
    """(open file, ``index(file)``) when the index is not empty, else None (file closed).

    An index that fails is logged and treated as empty: an optimisation must never make a
    readable slide fail."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - kept open for the index's lifetime
    except OSError:
        return None
    try:
        levels = index(fh)
    except Exception as exc:
        log.warning("no %s for %s: %s", what, path, exc)
        levels = {}
    if not levels:
        fh.close()
        return None
    return fh, levels


def _index_levels(fh: Any, slide: openslide.AbstractSlide, wanted: dict[int, int],
                  tile_size: int) -> dict[int, StoredLevel]:
    levels: dict[int, StoredLevel] = {}
    with tifffile.TiffFile(fh) as tif:  # a handle we opened ourselves is left open
        pages = tiled_pages(tif)
        for dz_level, level in wanted.items():
            found = stored_level(pages, slide.level_dimensions[level], tile_size)
            if found is not None:
                levels[dz_level] = found
    return levels


def tiled_pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    return [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]


def stored_level(pages: list[tifffile.TiffPage], dimensions: tuple[int, int],
                 tile_size: int | None) -> StoredLevel | None:
    """The one tiled IFD of these dimensions as a StoredLevel, if its JPEG tiles qualify.

    ``tile_size`` None takes the IFD's own (square) tile size."""
    width, height = dimensions
    same = [p for p in pages if (p.imagewidth, p.imagelength) == (width, height)]
    if len(same) != 1:
        return None  # no IFD or an ambiguous one
    page = same[0]
    size = page.tilewidth if tile_size is None else tile_size
    tables = _eligible(page, size)
    if tables is None or size < 16:
        return None
    markers = {marker for marker, _ in tables}
    across = math.ceil(width / size)
    if len(page.dataoffsets) != across * math.ceil(height / size):
        return None
    return StoredLevel(
        offsets=array("Q", page.dataoffsets), counts=array("Q", page.databytecounts),
        across=across, full_cols=width // size, full_rows=height // size,
        tables=b"".join(seg for _, seg in tables), tables_dqt=_DQT in markers,
        tables_dht=_DHT in markers, rgb=page.photometric == _PHOTOMETRIC_RGB,
        tile_size=size)


def _eligible(page: tifffile.TiffPage, tile_size: int) -> list[tuple[int, bytes]] | None:
    """The IFD's JPEGTables segments if its tiles can pass through, else None."""
    if (page.compression != 7
            or page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR)
            or page.planarconfig != 1 or page.samplesperpixel != 3
            or page.bitspersample != 8 or page.sampleformat != 1 or page.extrasamples
            or page.predictor != 1 or page.fillorder != 1
            or page.imagedepth != 1 or page.tiledepth != 1
            or page.tilewidth != tile_size or page.tilelength != tile_size):
        return None
    return [] if page.jpegtables is None else table_segments(page.jpegtables)
