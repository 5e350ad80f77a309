"""OpenSlide's ``read_region`` over a grid of stored tiles, bit for bit, in numpy.

Why: a DICOM slide read over DICOMweb must give the pixels OpenSlide gives for the same
files, and on a level whose downsample is not a whole number (odd level sizes: 2001 px
over 1001 px is 1.9988...) OpenSlide does not copy whole pixels. What it does (OpenSlide
4.0.1 with the cairo 1.18.4 and pixman 0.46.4 that openslide-bin links, read in their
sources and checked against the library on many offsets):

- ``openslide_read_region`` (openslide.c) paints 4096 px squares, each on its own
  zeroed cairo group; a negative x or y shifts the painting by ``int(-x / ds)`` level
  pixels; the level position is ``x / ds``, fractional.
- The simple grid (openslide-grid.c) paints every tile the square touches, last row and
  column first, as an ARGB32 surface whose pixels past the level's edge are cleared
  (``_openslide_clip_tile``), translated by ``tile * tile_size - offset``, operator
  SATURATE.
- cairo turns the translation into pixman's 16.16 fixed point (round half to even); a
  whole translation is a copy (filter NEAREST); otherwise CAIRO_FILTER_GOOD at unit scale
  is pixman's BILINEAR, and outside the surface reads transparent (EXTEND_NONE).
- SATURATE needs a division, so pixman composites in its float pipeline: each 8-bit
  value becomes ``c * (1.0f / 255)``, bilinear weights are the sample's 16-bit
  fraction / 65536 (``bilinear_interpolation_float``), the float SATURATE combiner adds
  ``min(1, s * clamp((1 - da) / sa) + d)``, and ``float_to_unorm`` stores
  ``trunc(f * 256)`` (256 -> 255). All in IEEE single precision, as numpy's float32.
- openslide-python un-premultiplies: ``255 * c // a`` where ``0 < a < 255``.

Inside a tile that is bilinear interpolation; at tile seams and at the level's right and
bottom edges it leaves alpha below 255, which DeepZoomGenerator composites on its
background. Where the translation is whole (every power-of-two level, level 0) each tile
is copied, as cairo copies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CHUNK = 4096  # openslide_read_region's squares (cairo surface and pixman size limits)
_ONE = 1 << 16  # pixman_fixed_1
_UNORM8 = np.float32(1.0) / np.float32(255)  # pixman_expand_to_float's multiplier


Span = tuple[int, int, int, int, bool]
# decoded tiles (height x width x 3 RGB, or 2-D grey) at (col, row); None: not stored
TileFetch = Callable[[list[tuple[int, int]]], Sequence[np.ndarray | None]]


class Grid:
    """One pyramid level as OpenSlide's simple grid sees it."""

    def __init__(self, width: int, height: int, tile_w: int, tile_h: int,
                 downsample: float) -> None:
        self.width, self.height = width, height
        self.tile_w, self.tile_h = tile_w, tile_h
        self.downsample = downsample
        self.across = -(-width // tile_w)
        self.down = -(-height // tile_h)

    def kept(self, tile: np.ndarray, col: int, row: int) -> tuple[int, int]:
        """(width, height) of the stored tile (col, row) that lies inside the level: the
        pixels past its right and bottom edges are cleared (``_openslide_clip_tile``)."""
        return (min(self.tile_w, self.width - col * self.tile_w, tile.shape[1]),
                min(self.tile_h, self.height - row * self.tile_h, tile.shape[0]))


def read_region(grid: Grid, x: int, y: int, w: int, h: int, fetch: TileFetch) -> np.ndarray:
    """RGBA (h x w x 4, not premultiplied) that openslide-python's ``read_region`` returns
    for level-0 ``(x, y)`` and level size ``(w, h)``; ``fetch`` is called once, with
    every tile needed."""
    areas = []
    ds = grid.downsample
    for row in range((h + CHUNK - 1) // CHUNK):
        for col in range((w + CHUNK - 1) // CHUNK):
            sx = int(x + col * CHUNK * ds)  # as openslide.c: int64 from a double
            sy = int(y + row * CHUNK * ds)
            sw, sh = min(w - col * CHUNK, CHUNK), min(h - row * CHUNK, CHUNK)
            areas.append((col * CHUNK, row * CHUNK, _area(grid, sx, sy, sw, sh)))
    wanted = list(dict.fromkeys(t for *_, plan in areas for t in plan.tiles()))
    tiles = dict(zip(wanted, fetch(wanted), strict=True)) if wanted else {}
    premul = np.zeros((h, w, 4), np.uint8)
    for dx, dy, plan in areas:
        plan.paint(premul[dy:dy + plan.surface_h, dx:dx + plan.surface_w], tiles)
    return _unpremultiply(premul)


class _Axis:
    """Where each tile along one axis lands on the destination, per tile index: the
    sample position of destination pixel 0 in pixman's 16.16 fixed point, and whether
    cairo sees a whole-pixel translation (then it copies)."""

    def __init__(self, level_pos: float, size: int, advance: int, count: int) -> None:
        self.start = int(level_pos / advance)
        end = math.ceil((level_pos + size) / advance)
        self.empty = self.start > count - 1
        self.end = min(end, count)
        offset = level_pos - self.start * advance
        self.fixed: dict[int, int] = {}
        self.whole: dict[int, bool] = {}
        for k in range(self.start, self.end):
            translate = (k - self.start) * advance - offset
            # cairo: pattern matrix x0 = -translate, to 16.16 by the magic-number
            # conversion (round half to even, as Python's round); pixman samples
            # destination pixel i at i + 0.5 + x0
            self.fixed[k] = round(-translate * _ONE) + _ONE // 2
            self.whole[k] = float(translate).is_integer()
        self.size, self.advance = size, advance

    def span(self, k: int) -> Span | None:
        """(first, last + 1 destination pixel, tile pixel left of (above) the first's
        sample, the sample's 16-bit fraction, whole-pixel translation) for tile ``k``;
        None if it touches nothing."""
        x = self.fixed[k] - _ONE // 2  # pixman's bilinear: sample - 0.5
        p0 = x >> 16
        whole = self.whole[k]  # a copy: no neighbour to the left (above) to blend in
        first = max(0, -p0) if whole else max(0, -1 - p0)
        last = min(self.size, self.advance - p0)
        if first >= last:
            return None
        return first, last, p0 + first, x & 0xFFFF, whole


class _AreaPlan:
    """One of openslide_read_region's squares: the tiles it paints and where."""

    def __init__(self, grid: Grid, surface: tuple[int, int], origin: tuple[int, int],
                 axes: tuple[_Axis, _Axis] | None) -> None:
        self.grid = grid
        self.surface_w, self.surface_h = surface
        self.origin = origin  # destination pixel of level position (x/ds, y/ds)
        self.axes = axes

    def tiles(self) -> list[tuple[int, int]]:
        if self.axes is None:
            return []
        ax, ay = self.axes
        return [(c, r) for r in range(ay.start, ay.end) for c in range(ax.start, ax.end)]

    def paint(self, dest: np.ndarray, tiles: dict[tuple[int, int], np.ndarray | None]
              ) -> None:
        if self.axes is None:
            return
        ax, ay = self.axes
        ox, oy = self.origin
        # read_tiles(): last row first, each row last column first (the float
        # SATURATE of a seam's second tile depends on the first)
        for r in range(ay.end - 1, ay.start - 1, -1):
            yspan = ay.span(r)
            if yspan is None:
                continue
            for c in range(ax.end - 1, ax.start - 1, -1):
                xspan = ax.span(c)
                tile = tiles.get((c, r))
                if xspan is None or tile is None:
                    continue  # a tile a sparse series does not store stays transparent
                if xspan[4] and yspan[4]:
                    self._copy(dest[oy:, ox:], tile, c, r, xspan, yspan)
                else:
                    _paint_tile(dest[oy:, ox:], self._surface(tile, c, r), xspan, yspan)

    def _copy(self, dest: np.ndarray, tile: np.ndarray, col: int, row: int, xspan: Span,
              yspan: Span) -> None:
        """A whole translation: cairo copies the tile (filter NEAREST) onto a square no
        other tile touches, and pixman's float round trip of an 8-bit value is exact,
        so the pixels land as stored (opaque), but for those past the level's edge."""
        x0, x1, px, _, _ = xspan
        y0, y1, py, _, _ = yspan
        keep_w, keep_h = self.grid.kept(tile, col, row)
        x1 = min(x1, dest.shape[1], x0 + keep_w - px)
        y1 = min(y1, dest.shape[0], y0 + keep_h - py)
        if x0 >= x1 or y0 >= y1:
            return
        part = tile[py:py + y1 - y0, px:px + x1 - x0]
        box = dest[y0:y1, x0:x1]
        box[..., :3] = part[..., None] if part.ndim == 2 else part[..., :3]
        box[..., 3] = 255

    def _surface(self, tile: np.ndarray, col: int, row: int) -> np.ndarray:
        """The tile as OpenSlide hands it to cairo: premultiplied RGBA, pixels past the
        level's edge cleared (_openslide_clip_tile), with a transparent 1 px frame so a
        bilinear neighbour outside the tile reads 0 (EXTEND_NONE)."""
        g = self.grid
        keep_w, keep_h = g.kept(tile, col, row)
        out = np.zeros((g.tile_h + 2, g.tile_w + 2, 4), np.uint8)
        body = out[1:1 + keep_h, 1:1 + keep_w]
        if tile.ndim == 2:
            body[..., :3] = tile[:keep_h, :keep_w, None]
        else:
            body[..., :3] = tile[:keep_h, :keep_w, :3]
        body[..., 3] = 255
        return out


def _area(grid: Grid, x: int, y: int, w: int, h: int) -> _AreaPlan:
    """openslide.c read_region(): negative coordinates shift the painting right/down by
    whole level pixels; then the grid paints from level position (x/ds, y/ds)."""
    ds = grid.downsample
    tx = ty = 0
    if x < 0:
        tx = int(-x / ds)
        x, w = 0, w - tx
    if y < 0:
        ty = int(-y / ds)
        y, h = 0, h - ty
    surface = (w + tx, h + ty)
    if w <= 0 or h <= 0:
        return _AreaPlan(grid, surface, (tx, ty), None)
    ax = _Axis(x / ds, w, grid.tile_w, grid.across)
    ay = _Axis(y / ds, h, grid.tile_h, grid.down)
    if ax.empty or ay.empty:
        return _AreaPlan(grid, surface, (tx, ty), None)
    return _AreaPlan(grid, surface, (tx, ty), (ax, ay))


def _paint_tile(dest: np.ndarray, surface: np.ndarray, xspan: Span, yspan: Span) -> None:
    """Composite one tile at a fractional translation onto ``dest`` (premultiplied
    uint8) as pixman does: bilinear, then SATURATE, in float."""
    x0, x1, px, xfrac, _ = xspan
    y0, y1, py, yfrac, _ = yspan
    x1 = min(x1, dest.shape[1])  # the cairo surface clips what falls past it
    y1 = min(y1, dest.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    n, m = x1 - x0, y1 - y0
    sx, sy = px + 1, py + 1  # the surface has a 1 px transparent frame
    box = dest[y0:y1, x0:x1]
    pixels = surface[sy:sy + m + 1, sx:sx + n + 1].astype(np.float32) * _UNORM8
    one = np.float32(1)
    dx, dy = np.float32(xfrac) / np.float32(_ONE), np.float32(yfrac) / np.float32(_ONE)
    src = (pixels[:m, :n] * ((one - dx) * (one - dy))  # bilinear_interpolation_float,
           + pixels[:m, 1:] * (dx * (one - dy))        # in its order of operations
           + pixels[1:, :n] * ((one - dx) * dy)
           + pixels[1:, 1:] * (dx * dy))
    d = box.astype(np.float32) * _UNORM8
    sa, da = src[..., 3:], d[..., 3:]
    factor = np.clip((one - da) / np.where(sa == 0, one, sa), 0, 1)
    factor = np.where(sa == 0, one, factor).astype(np.float32)
    out = np.minimum(one, src * factor + d)
    u = (np.clip(out, 0, 1) * np.float32(256)).astype(np.uint32)
    box[...] = (u - (u >> 8)).astype(np.uint8)


def _unpremultiply(premul: np.ndarray) -> np.ndarray:
    """openslide-python's argb2rgba: colour * 255 // alpha where 0 < alpha < 255."""
    alpha = premul[..., 3]
    partial = (alpha > 0) & (alpha < 255)
    if partial.any():
        a = alpha[partial].astype(np.uint32)[:, None]
        premul[partial, :3] = (premul[partial, :3].astype(np.uint32) * 255 // a
                               ).astype(np.uint8)
    return premul
