"""OpenSlide-backed reader: DeepZoom tiles pixel-identical to DeepZoomGenerator.get_tile."""

from __future__ import annotations

import logging
from typing import Any

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image, UnidentifiedImageError

from config.errors import BadSlide, SlideNotFound
from readers.base import READ_ERRORS, RegionRequest, SlideReader
from readers.deepzoom_info import associated_image, check_tile, describe, render_tile
from readers.encode import encode_image
from readers.formats import ASSOCIATED_QUALITY
from readers.passthrough import VENDORS, PassthroughIndex
from readers.region import render_region
from readers.stored_levels import DecodedTiles, StoredLevels
from readers.tiff_layout import EnsuredReads, MirrorUnsuitable, RemoteTiff

log = logging.getLogger(__name__)

_OPEN_ERRORS = (openslide.OpenSlideError, UnidentifiedImageError, ValueError, OSError)


class OpenSlideReader(SlideReader):
    """One open slide plus its DeepZoom generator.

    Pass the worker's shared ``openslide.OpenSlideCache`` so every reader of a
    worker shares one decoded-tile cache (measured faster than per-handle caches).
    """

    def __init__(
        self,
        path: str,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        limit_bounds: bool = True,
        cache: openslide.OpenSlideCache | None = None,
        name: str = "",
        passthrough: bool = True,
        decoded: DecodedTiles | None = None,
        remote: RemoteTiff | None = None,
    ) -> None:
        self.path = path
        self.name = name or path
        try:
            self._slide = openslide.open_slide(path)
        except FileNotFoundError:
            raise SlideNotFound(f"no slide {self.name!r}") from None
        except _OPEN_ERRORS as exc:
            raise BadSlide(f"cannot open {self.name!r} as a slide: {exc}") from None
        if cache is not None and isinstance(self._slide, openslide.OpenSlide):
            self._slide.set_cache(cache)
        self._remote = remote
        reads: Any = self._slide  # what pixel reads go through (fetching first if remote)
        if remote is not None:
            if (self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR) not in VENDORS
                    or not remote.bind_levels(list(self._slide.level_dimensions))):
                self._slide.close()
                raise MirrorUnsuitable(f"{self.name!r} is not read by tiles alone")
            reads = EnsuredReads(self._slide, remote, self._slide.level_downsamples)
        self._reads = reads
        try:
            self._dz = DeepZoomGenerator(reads, tile_size, overlap, limit_bounds)
        except _OPEN_ERRORS as exc:
            self._slide.close()
            raise BadSlide(f"cannot tile {self.name!r}: {exc}") from None
        self.tile_size = tile_size
        self.overlap = overlap
        # stored JPEG tiles served as-is where they are exactly the DeepZoom tile
        self._passthrough = (
            PassthroughIndex.build(path, self._slide, self._dz, tile_size, limit_bounds)
            if passthrough and overlap == 0 else None)
        # stored JPEG tiles decoded by Pillow where a tile is read 1:1 (stored_levels.py)
        stored = (StoredLevels.build(path, self._slide, decoded)
                  if decoded is not None and isinstance(self._slide, openslide.OpenSlide)
                  else None)
        self._stored: Any = (EnsuredReads(stored, remote, self._slide.level_downsamples)
                             if stored is not None and remote is not None else stored)

    @property
    def stored_reads(self) -> int:
        """Reads served by decoding stored tiles instead of through OpenSlide."""
        return self._stored.rendered if self._stored is not None else 0

    def describe(self) -> dict[str, Any]:
        return describe(self.name, self._slide, self._dz, self.tile_size, self.overlap)

    def check_tile(self, level: int, col: int, row: int) -> None:
        check_tile(self._dz, level, col, row)

    def stored_tile(self, level: int, col: int, row: int) -> bytes | None:
        if self._passthrough is None:
            return None
        if self._remote is not None:
            location, slide_level, size = self._dz.get_tile_coordinates(level, (col, row))
            self._remote.ensure_region(slide_level, location, size,
                                       self._slide.level_downsamples[slide_level])
        return self._passthrough.stored_tile(level, col, row)

    def tile(self, level: int, col: int, row: int, fmt: str, quality: int) -> bytes:
        self.check_tile(level, col, row)
        if fmt == "jpeg":
            stored = self.stored_tile(level, col, row)
            if stored is not None:
                return stored
        try:
            return encode_image(self._render(level, col, row), fmt, quality)
        except READ_ERRORS as exc:
            raise BadSlide(f"read error in {self.name!r}: {exc}") from None

    def _render(self, level: int, col: int, row: int) -> Image.Image:
        """``DeepZoomGenerator.get_tile``'s pixels, from stored tiles where it reads them at
        integral level coordinates (then resized exactly as it resizes)."""
        args = self._dz.get_tile_coordinates(level, (col, row))
        if self._stored is not None and min(args[2]) > 0:
            image = self._stored.read_region(*args)
            if image is not None:
                z_size = self._dz.get_tile_dimensions(level, (col, row))
                if image.size != tuple(z_size):
                    image.thumbnail(z_size, Image.Resampling.LANCZOS)
                return image
        return render_tile(self._reads, self._dz, level, col, row)

    def region(self, req: RegionRequest, max_area: int, jpeg_quality: int
               ) -> tuple[bytes, int]:
        image, level, _ = render_region(self._reads, req, max_area, jpeg_quality, self._stored)
        return image, level

    def associated(self, name: str, size: int) -> bytes:
        try:
            if name == "thumbnail" and self._remote is not None:  # it reads a level whole
                dims = self._slide.dimensions
                self._remote.ensure_level(self._slide.get_best_level_for_downsample(
                    max(dims[0] / size, dims[1] / size)))
            image = associated_image(self._slide, name, size, self.name)
            return encode_image(image, "jpeg", ASSOCIATED_QUALITY)
        except READ_ERRORS as exc:
            raise BadSlide(f"read error in {self.name!r}: {exc}") from None

    def close(self) -> None:
        self._slide.close()
        if self._remote is not None:
            self._remote.close()
        if self._passthrough is not None:
            self._passthrough.close()
        if self._stored is not None:
            self._stored.close()

