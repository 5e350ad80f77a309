"""A DICOM whole-slide image read over DICOMweb (wsidicom), served like any other slide.

DeepZoom tiles and IIIF regions must be what ``DeepZoomGenerator`` makes of OpenSlide
reading the same DICOM files, so the arithmetic is OpenSlide's own: ``DicomSlide`` offers
OpenSlide's ``AbstractSlide`` API (levels, downsamples computed as OpenSlide computes
them, ``read_region`` giving RGBA with transparent pixels outside the level), and the
stock ``DeepZoomGenerator`` and ``readers/region.py`` run over it. Pixels come from the
series' stored frames: fetched by wsidicom over WADO-RS (in one request per read, through
the worker's frame cache), decoded with Pillow for baseline JPEG (libjpeg-turbo at its
defaults, as OpenSlide) and with wsidicom's codecs otherwise, kept decoded in the worker's
``DecodedTiles`` LRU, and painted as OpenSlide paints them (``openslide_paint.py``:
copied where the level position is whole, cairo's bilinear where it is not). Where a
DeepZoom tile *is* a stored JPEG frame (tile size equal to the frame size, overlap 0, a
level read 1:1, the frame wholly inside it) the frame's bytes are served as they are, as
``readers/passthrough.py`` does for TIFF.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import openslide
import wsidicom.config
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from wsidicom import WsiDicom
from wsidicom.geometry import Point

from config.errors import BadSlide, TileRouterError
from readers.base import READ_ERRORS, RegionRequest, SlideReader
from readers.deepzoom_info import associated_image, check_tile, describe, render_tile
from readers.dicom_frames import (
    JPEG_BASELINE,
    Associated,
    decode_frame,
    icc_profile,
    standalone_ycbcr,
)
from readers.encode import encode_image
from readers.formats import ASSOCIATED_QUALITY
from readers.openslide_paint import Grid
from readers.openslide_paint import read_region as paint_region
from readers.region import render_region
from readers.stored_levels import DecodedTiles

# wsidicom keeps 100 MB of encoded and of decoded frames per open slide; a worker holds
# up to ``reader_cache_size`` slides, so its own bounded caches (frame_cache.py,
# DecodedTiles) replace them. 1 byte, not 0: wsidicom 0.31's cache yields nothing at 0.
wsidicom.config.settings.encoded_frame_cache_size = 1
wsidicom.config.settings.decoded_frame_cache_size = 1

READ_AHEAD = 4  # frames fetched in blocks of 4 x 4 (see DicomSlide._encoded)


class DicomSlide(openslide.AbstractSlide):
    """OpenSlide's slide API over one wsidicom pyramid, so OpenSlide's DeepZoom arithmetic
    runs unchanged on DICOMweb frames."""

    def __init__(self, wsi: WsiDicom, properties: dict[str, str],
                 decoded: DecodedTiles | None = None) -> None:
        super().__init__()
        self._wsi = wsi
        self._levels = list(wsi.levels)
        self._dims = tuple((lv.size.width, lv.size.height) for lv in self._levels)
        w0, h0 = self._dims[0]
        # as openslide.c does when a vendor gives none: the mean of the two axes' ratios
        self._downsamples = tuple((w0 / w + h0 / h) / 2 for w, h in self._dims)
        self._grids = [Grid(w, h, lv.tile_size.width, lv.tile_size.height, ds)
                       for (w, h), lv, ds in zip(self._dims, self._levels, self._downsamples,
                                                 strict=True)]
        self._properties = properties
        self._associated = Associated(wsi)
        self._decoded = decoded
        self._owner = object()  # this slide's keys in the shared DecodedTiles
        self._profile = icc_profile(wsi)  # AbstractSlide's: ``color_profile`` reads it
        if self._profile:
            properties["openslide.icc-size"] = str(len(self._profile))

    @classmethod
    def detect_format(cls, filename: Any) -> str | None:
        return None  # never opened from a file name

    def close(self) -> None:
        if self._decoded is not None:
            self._decoded.discard(self._owner)
        self._wsi.close()

    @property
    def level_count(self) -> int:
        return len(self._levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return self._associated

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """openslide_get_best_level_for_downsample: the last level not finer than asked."""
        if downsample < self._downsamples[0]:
            return 0
        for i in range(1, len(self._downsamples)):
            if downsample < self._downsamples[i]:
                return i - 1
        return len(self._downsamples) - 1

    def tile_size(self, level: int) -> tuple[int, int]:
        ts = self._levels[level].tile_size
        return ts.width, ts.height

    def frame(self, level: int, col: int, row: int) -> tuple[bytes, str, str] | None:
        """The stored frame at tile (col, row) of ``level`` with its transfer syntax and
        photometric interpretation; None where a sparse series stores none."""
        data = self._levels[level].default_instance.image_data
        frame = self._encoded(level, [Point(col, row)])[0]
        if frame is None:
            return None
        return frame, str(data.transfer_syntax), str(data.photometric_interpretation)

    def _encoded(self, level: int, points: list[Point]) -> list[bytes | None]:
        """Encoded frames at ``points`` (None where not stored), fetched together with the
        rest of their ``READ_AHEAD`` x ``READ_AHEAD`` blocks of frames in one request.

        Why: a WADO-RS request costs a PACS about the same for 1 frame as for 64 (Orthanc
        parses the instance each time: 10-14 ms for 1 to 64 frames of a 768-frame
        instance here), and a viewer asks next for the neighbours. The extra frames go in
        the worker's frame cache (frame_cache.py), already-cached ones are not fetched."""
        data = self._levels[level].default_instance.image_data
        across, down = data.tiled_size.width, data.tiled_size.height
        wanted = list(dict.fromkeys((p.x, p.y) for p in points))
        batch = dict.fromkeys(wanted)
        for x, y in wanted:
            bx, by = x - x % READ_AHEAD, y - y % READ_AHEAD
            for yy in range(by, min(by + READ_AHEAD, down)):
                for xx in range(bx, min(bx + READ_AHEAD, across)):
                    batch.setdefault((xx, yy))
        keys = list(batch)
        frames = data.get_encoded_tiles([Point(x, y) for x, y in keys], data.default_z,
                                        data.default_path)
        found = dict(zip(keys, frames, strict=True))
        blank = data.blank_encoded_tile
        return [None if found[(p.x, p.y)] is blank else bytes(found[(p.x, p.y)])
                for p in points]

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]
                    ) -> Image.Image:
        """RGBA pixels of ``level`` at level-0 ``location``, the ones OpenSlide gives for
        the same frames: transparent outside the level, and on a level whose downsample
        is fractional each frame painted at its sub-pixel offset as OpenSlide's cairo
        does (readers/openslide_paint.py)."""
        w, h = size
        if w < 0 or h < 0:
            raise openslide.OpenSlideError(f"negative width ({w}) or height ({h})")
        if w == 0 or h == 0:
            return Image.new("RGBA", (w, h))

        def fetch(cells: list[tuple[int, int]]) -> list[np.ndarray | None]:
            tiles = self._tiles(level, [Point(c, r) for c, r in cells])
            return [None if t is None else np.asarray(t) for t in tiles]

        pixels = paint_region(self._grids[level], location[0], location[1], w, h, fetch)
        out = Image.fromarray(pixels, "RGBA")
        if self._profile:  # as OpenSlide's read_region: DeepZoomGenerator passes it on
            out.info["icc_profile"] = self._profile
        return out

    def _tiles(self, level: int, points: list[Point]) -> list[Image.Image | None]:
        """Decoded frames at ``points`` (from the decoded cache, the rest fetched in one
        batch and decoded)."""
        keys = [(self._owner, level, p.x, p.y) for p in points]
        cache = self._decoded
        found: list[Image.Image | None] = [cache.get(k) if cache is not None else None
                                           for k in keys]
        missing = [i for i, im in enumerate(found) if im is None]
        if not missing:
            return found
        data = self._levels[level].default_instance.image_data
        frames = self._encoded(level, [points[i] for i in missing])
        syntax, photometric = str(data.transfer_syntax), str(data.photometric_interpretation)
        for i, frame in zip(missing, frames, strict=True):
            if frame is None:
                continue
            image = decode_frame(frame, syntax, photometric, data.decoder)
            found[i] = image
            if cache is not None:
                cache.put(keys[i], image)
        return found


class DicomReader(SlideReader):
    """One WSI series from a DICOMweb store, as a ``SlideReader``."""

    def __init__(self, wsi: WsiDicom, attrs: dict[str, str], *, name: str,
                 tile_size: int = 254, overlap: int = 1, limit_bounds: bool = True,
                 passthrough: bool = True, decoded: DecodedTiles | None = None) -> None:
        self.name = name
        try:
            self._slide = DicomSlide(wsi, _properties(wsi, attrs), decoded)
            self._dz = DeepZoomGenerator(self._slide, tile_size, overlap, limit_bounds)
        except TileRouterError:
            wsi.close()
            raise
        except Exception as exc:  # metadata wsidicom parsed but we cannot tile
            wsi.close()
            raise BadSlide(f"cannot tile {name!r}: {type(exc).__name__}") from None
        self.tile_size = tile_size
        self.overlap = overlap
        self._passthrough = passthrough and overlap == 0

    @property
    def slide(self) -> DicomSlide:
        """OpenSlide's slide API over the series' frames (what DeepZoom runs on), so a
        caller can set it beside ``openslide.OpenSlide`` on the same files."""
        return self._slide

    def describe(self) -> dict[str, Any]:
        return describe(self.name, self._slide, self._dz, self.tile_size, self.overlap, "dicom")

    def _check(self, level: int, col: int, row: int) -> None:
        check_tile(self._dz, level, col, row)

    def stored_tile(self, level: int, col: int, row: int) -> bytes | None:
        """The stored JPEG frame when it is exactly this DeepZoom tile, else None."""
        if not self._passthrough or not 0 <= level < self._dz.level_count:
            return None
        location, lvl, size = self._dz.get_tile_coordinates(level, (col, row))
        ts, slide = self.tile_size, self._slide
        lw, lh = slide.level_dimensions[lvl]
        ds = slide.level_downsamples[lvl]
        if (slide.tile_size(lvl) != (ts, ts) or size != (ts, ts)
                or tuple(self._dz.level_dimensions[level]) != (lw, lh)
                or (location[0] / ds, location[1] / ds) != (col * ts, row * ts)
                or (col + 1) * ts > lw or (row + 1) * ts > lh):
            # OpenSlide paints the frame 1:1 only at a whole level position: on a
            # fractional downsample (odd level sizes) it interpolates
            return None
        try:
            found = slide.frame(lvl, col, row)
        except READ_ERRORS:
            return None
        if found is None:
            return None
        frame, syntax, photometric = found
        if syntax != JPEG_BASELINE or not photometric.startswith("YBR_FULL"):
            return None
        return frame if standalone_ycbcr(frame) else None

    def tile(self, level: int, col: int, row: int, fmt: str, quality: int) -> bytes:
        self._check(level, col, row)
        if fmt == "jpeg":
            stored = self.stored_tile(level, col, row)
            if stored is not None:
                return stored
        try:
            image = render_tile(self._slide, self._dz, level, col, row)
            return encode_image(image, fmt, quality)
        except READ_ERRORS as exc:
            raise BadSlide(f"read error in {self.name!r}: {type(exc).__name__}") from None

    def region(self, req: RegionRequest, max_area: int, jpeg_quality: int
               ) -> tuple[bytes, int]:
        image, level, _ = render_region(self._slide, req, max_area, jpeg_quality)
        return image, level

    def associated(self, name: str, size: int) -> bytes:
        try:
            image = associated_image(self._slide, name, size, self.name)
            return encode_image(image, "jpeg", ASSOCIATED_QUALITY)
        except READ_ERRORS as exc:
            raise BadSlide(f"read error in {self.name!r}: {type(exc).__name__}") from None

    def close(self) -> None:
        self._slide.close()


def _properties(wsi: WsiDicom, attrs: dict[str, Any]) -> dict[str, str]:
    """OpenSlide-style properties: the standard ``openslide.*`` names, then a few DICOM
    attributes (no patient data: ``info`` goes to every viewer)."""
    props = {openslide.PROPERTY_NAME_VENDOR: "dicom"}
    mpp = wsi.levels[0].mpp
    if mpp is not None:
        props[openslide.PROPERTY_NAME_MPP_X] = repr(float(mpp.width))
        props[openslide.PROPERTY_NAME_MPP_Y] = repr(float(mpp.height))
    props["openslide.level-count"] = str(len(wsi.levels))
    w0, h0 = wsi.levels[0].size.width, wsi.levels[0].size.height
    for i, lv in enumerate(wsi.levels):
        w, h = lv.size.width, lv.size.height
        props[f"openslide.level[{i}].width"] = str(w)
        props[f"openslide.level[{i}].height"] = str(h)
        props[f"openslide.level[{i}].downsample"] = repr((w0 / w + h0 / h) / 2)
        props[f"openslide.level[{i}].tile-width"] = str(lv.tile_size.width)
        props[f"openslide.level[{i}].tile-height"] = str(lv.tile_size.height)
    ds = wsi.levels[0].default_instance.dataset
    for path in getattr(ds, "OpticalPathSequence", None) or []:  # where OpenSlide looks
        power = getattr(path, "ObjectiveLensPower", None)
        if power not in (None, ""):
            props[openslide.PROPERTY_NAME_OBJECTIVE_POWER] = f"{float(power):g}"
        break
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "Manufacturer",
                "ManufacturerModelName", "SeriesDescription", "ContainerIdentifier"):
        value = getattr(ds, key, None)
        if value not in (None, ""):
            props[f"dicom.{key}"] = str(value)
    return props

