"""Which byte ranges of a TIFF a slide read touches, for reading it through a mirror.

``RemoteTiff`` parses a remote TIFF's directories through a ``RangeMirror`` (touching
every tag's value, so every byte libtiff reads when OpenSlide opens the file is
fetched), then fetches, before each read, the tiles the read covers. At open it also
fetches the lowest-resolution level (OpenSlide hashes its tiles into
``openslide.quickhash-1``) and every stripped directory (label, macro, thumbnail), all
in one batch of ranged reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tifffile

from readers.range_mirror import FetchRanges, RangeMirror


class MirrorUnsuitable(Exception):
    """The slide opened, but OpenSlide may read more of it than its tiles and directories
    (another vendor, levels that are not plain tiled directories): fetch it whole."""


MARGIN = 1  # level pixels read around a region: OpenSlide may sample one beyond it


@dataclass(frozen=True)
class PageData:
    """One directory's image data: where each tile (or strip) lies."""

    width: int
    height: int
    tile_w: int  # 0 for a stripped directory
    tile_h: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]

    def ranges(self) -> list[tuple[int, int]]:
        return [(o, o + c) for o, c in zip(self.offsets, self.counts, strict=True) if c]

    def tile_ranges(self, x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
        """Ranges of the tiles meeting the level rectangle [x0, x1) x [y0, y1)."""
        across = math.ceil(self.width / self.tile_w)
        down = math.ceil(self.height / self.tile_h)
        c0, r0 = max(0, x0 // self.tile_w), max(0, y0 // self.tile_h)
        c1 = min(across - 1, (x1 - 1) // self.tile_w)
        r1 = min(down - 1, (y1 - 1) // self.tile_h)
        out = []
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                i = row * across + col
                if i < len(self.counts) and self.counts[i]:
                    out.append((self.offsets[i], self.offsets[i] + self.counts[i]))
        return out


class RemoteTiff:
    """A remote TIFF opened through a sparse mirror; ``path`` is what OpenSlide opens."""

    def __init__(self, size: int, fetch: FetchRanges, directory: str, suffix: str,
                 max_bytes: int = 1 << 62) -> None:
        self.mirror = RangeMirror(size, fetch, directory, suffix, max_bytes)
        try:
            self.tiled, self.stripped = _parse(self.mirror)
            if not self.tiled:
                raise ValueError("no tiled directory: not a pyramidal TIFF")
            # OpenSlide hashes its lowest-resolution level's tiles at open
            smallest = min(self.tiled.values(), key=lambda p: p.width * p.height)
            self.mirror.ensure(smallest.ranges() + [r for p in self.stripped for r in p.ranges()])
            self.mirror.pin()
        except BaseException:
            self.mirror.close()
            raise
        self._levels: dict[int, PageData] = {}

    @property
    def path(self) -> str:
        return self.mirror.path

    def bind_levels(self, level_dimensions: list[tuple[int, int]]) -> bool:
        """Match OpenSlide's levels to tiled directories by size; False if any is missing
        (then this file must not be read through the mirror)."""
        for level, dims in enumerate(level_dimensions):
            page = self.tiled.get(tuple(dims))
            if page is None:
                return False
            self._levels[level] = page
        return True

    def ensure_region(self, level: int, location: tuple[int, int], size: tuple[int, int],
                      downsample: float) -> None:
        """Fetch the tiles ``read_region(location, level, size)`` reads."""
        page = self._levels[level]
        x0 = math.floor(location[0] / downsample) - MARGIN
        y0 = math.floor(location[1] / downsample) - MARGIN
        self.mirror.ensure(page.tile_ranges(x0, y0, x0 + size[0] + 2 * MARGIN + 1,
                                            y0 + size[1] + 2 * MARGIN + 1))

    def ensure_level(self, level: int) -> None:
        self.mirror.ensure(self._levels[level].ranges())

    def close(self) -> None:
        self.mirror.close()


def _parse(mirror: RangeMirror) -> tuple[dict[tuple[int, int], PageData], list[PageData]]:
    """Tiled directories by size (the first of a size wins, as OpenSlide's levels are the
    main chain's), and stripped ones; every tag value is read (so fetched)."""
    tiled: dict[tuple[int, int], PageData] = {}
    stripped: list[PageData] = []
    with tifffile.TiffFile(mirror.open_reader()) as tif:
        for page in tif.pages:
            page = page.keyframe if not isinstance(page, tifffile.TiffPage) else page
            for tag in page.tags:
                _ = tag.value  # fetched now, as libtiff will read it at open
            data = PageData(page.imagewidth, page.imagelength,
                            page.tilewidth if page.is_tiled else 0,
                            page.tilelength if page.is_tiled else 0,
                            tuple(int(o) for o in page.dataoffsets),
                            tuple(int(c) for c in page.databytecounts))
            if page.is_tiled:
                tiled.setdefault((data.width, data.height), data)
            else:
                stripped.append(data)
    return tiled, stripped


class EnsuredReads:
    """Wraps an object with OpenSlide's ``read_region(location, level, size)`` (an
    OpenSlide handle, ``StoredLevels``) so that every read fetches its tiles first;
    everything else passes through. DeepZoomGenerator and region rendering get this
    in place of the handle, so they need not know the slide is remote."""

    def __init__(self, inner: object, remote: RemoteTiff, downsamples: tuple[float, ...]
                 ) -> None:
        self._inner = inner
        self._remote = remote
        self._downsamples = downsamples

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]
                    ) -> object:
        self._remote.ensure_region(level, location, size, self._downsamples[level])
        return self._inner.read_region(location, level, size)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
