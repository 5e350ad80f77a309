"""Render a level-0 region of a slide at any output size, from the best pyramid level.

The IIIF Image API (``wsgateway/iiif.py``) resolves every URL to one ``region`` request:
a level-0 rectangle ``x, y, w, h``, an output size ``out_w x out_h``, then mirroring,
rotation, quality and format. This module does the pixel work on a worker:

1. pick the pyramid level with ``get_best_level_for_downsample(min(w/out_w, h/out_h))``
   (never level 0 for a small output),
2. ``read_region`` the level pixels covering the rectangle, composite them on the
   slide's background colour (as ``DeepZoomGenerator`` does),
3. one Pillow LANCZOS resize of the exact (fractional) rectangle to the output size,
4. mirror, rotate (multiples of 90 exactly; other angles bicubic, expanded, transparent
   corners in PNG and background-coloured in JPEG), convert quality, encode.

Both the output and the pixels read from the chosen level are bounded, so a request
can never make a worker allocate a gigapixel image: a read over ``READ_AREA_FACTOR``
times the output limit (IIIF ``max`` of a pyramid with 4x steps reads up to 16x its
output from the level below) goes a horizontal stripe at a time (``read_striped``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import openslide
from PIL import Image

from config.errors import BadRequest, BadSlide, MessageTooLarge
from readers.base import READ_ERRORS, RegionRequest
from readers.encode import encode_image
from readers.formats import REGION_QUALITIES, TILE_FORMATS
from readers.stored_levels import StoredLevels

# Pixels read from the chosen level, as multiples of the output limit. Up to
# READ_AREA_FACTOR they are read at once and resized once. Up to STRIPED_READ_FACTOR
# they are read in stripes of at most STRIPE_PIXELS: enough for any output within the
# limit from a pyramid with 4x steps (an output just under a level's size is read from
# the level 4x finer in each axis: 16x its area). A slide without a pyramid cannot be
# shrunk whole (too_large).
READ_AREA_FACTOR = 4
STRIPED_READ_FACTOR = 16
STRIPE_PIXELS = 1 << 22  # level pixels per stripe: 16 MiB as OpenSlide's RGBA
LANCZOS_SUPPORT = 3.0  # Pillow's LANCZOS filter reaches 3 source pixels (x the scale)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What to read: ``slide.read_region(location, level, size)``, then resize ``box``.

    ``origin`` is ``location`` in ``level``'s pixels (its top-left read pixel)."""

    level: int
    location: tuple[int, int]
    size: tuple[int, int]
    box: tuple[float, float, float, float]
    origin: tuple[int, int] = (0, 0)


def clip_region(dims: tuple[int, int], x: int, y: int, w: int, h: int
                ) -> tuple[int, int, int, int]:
    """The rectangle cropped at the image's edges; BadRequest if nothing is left."""
    width, height = dims
    if w <= 0 or h <= 0:
        raise BadRequest("region width and height must be positive")
    if x >= width or y >= height or x < 0 or y < 0:
        raise BadRequest(f"region {x},{y},{w},{h} lies outside the {width}x{height} image")
    return x, y, min(w, width - x), min(h, height - y)


def plan_read(slide: openslide.AbstractSlide, x: int, y: int, w: int, h: int,
              out_w: int, out_h: int) -> ReadPlan:
    """The level and level-pixel rectangle to read for a level-0 region (already clipped).

    The downsample is the smaller of the two axes' so neither axis is upsampled from a
    coarser level than needed (``w,h`` requests may distort).
    """
    downsample = min(w / out_w, h / out_h)
    level = slide.get_best_level_for_downsample(downsample) if downsample > 1 else 0
    lds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    # level-pixel rectangle covering the region, aligned to the level's pixel grid
    ix0, iy0 = min(math.floor(x / lds), lw - 1), min(math.floor(y / lds), lh - 1)
    ix1 = max(min(math.ceil((x + w) / lds), lw), ix0 + 1)
    iy1 = max(min(math.ceil((y + h) / lds), lh), iy0 + 1)
    size = (ix1 - ix0, iy1 - iy0)
    box = (x / lds - ix0, y / lds - iy0,
           min((x + w) / lds - ix0, size[0]), min((y + h) / lds - iy0, size[1]))
    return ReadPlan(level, (round(ix0 * lds), round(iy0 * lds)), size, box, (ix0, iy0))


def render_region(slide: openslide.AbstractSlide, req: RegionRequest, max_area: int,
                  jpeg_quality: int = 75, stored: StoredLevels | None = None
                  ) -> tuple[bytes, int, tuple[int, int]]:
    """Encoded image, the pyramid level it was read from, and its final pixel size.

    ``stored``: the slide's stored JPEG levels (readers/stored_levels.py), which give the
    same pixels as ``read_region`` for less wherever the read is at whole level pixels.

    BadRequest (too_large) for outputs over ``max_area`` or reads over
    ``STRIPED_READ_FACTOR * max_area``; BadSlide for unreadable slide data.
    """
    if req.out_w * req.out_h > max_area:
        raise MessageTooLarge(
            f"output {req.out_w}x{req.out_h} exceeds the limit of {max_area} pixels")
    if req.quality not in REGION_QUALITIES:
        raise BadRequest(f"quality must be one of {', '.join(REGION_QUALITIES)}")
    if req.fmt not in TILE_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(TILE_FORMATS)}")
    x, y, w, h = clip_region(slide.dimensions, req.x, req.y, req.w, req.h)
    plan = plan_read(slide, x, y, w, h, req.out_w, req.out_h)
    area = plan.size[0] * plan.size[1]
    if area > STRIPED_READ_FACTOR * max_area:
        raise MessageTooLarge(
            f"region {x},{y},{w},{h} needs {plan.size[0]}x{plan.size[1]} pixels read at "
            f"level {plan.level}; the limit is {STRIPED_READ_FACTOR * max_area}")
    try:
        if area > READ_AREA_FACTOR * max_area:
            image = read_striped(slide, plan, (req.out_w, req.out_h), stored)
        else:
            image = read_plan(slide, plan, (req.out_w, req.out_h), stored)
    except READ_ERRORS as exc:
        raise BadSlide(f"read error: {exc}") from None
    image = transform(image, req.rotation, req.mirror, req.quality, req.fmt,
                      background(slide))
    return encode_image(image, req.fmt, jpeg_quality), plan.level, image.size


def background(slide: openslide.AbstractSlide) -> tuple[int, int, int]:
    hexcolor = slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
    try:
        value = int(hexcolor, 16)
    except ValueError:
        value = 0xFFFFFF
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def read_plan(slide: openslide.AbstractSlide, plan: ReadPlan,
              out: tuple[int, int], stored: StoredLevels | None = None) -> Image.Image:
    """RGB pixels of the planned rectangle, resized to ``out``."""
    image = (stored.read_region(plan.location, plan.level, plan.size)
             if stored is not None else None)
    if image is None:
        tile = slide.read_region(plan.location, plan.level, plan.size)
        bg = Image.new("RGB", tile.size, background(slide))
        image = Image.composite(tile, bg, tile)
    if out == plan.size and plan.box == (0, 0, plan.size[0], plan.size[1]):
        return image
    return image.resize(out, Image.Resampling.LANCZOS, box=plan.box)


def read_striped(slide: openslide.AbstractSlide, plan: ReadPlan, out: tuple[int, int],
                 stored: StoredLevels | None = None, stripe_pixels: int | None = None
                 ) -> Image.Image:
    """``read_plan``'s image, holding at most ``stripe_pixels`` (``STRIPE_PIXELS``)
    level pixels at a time.

    Each stripe of output rows is resized with the plan's scale from the exact
    fractional box of those rows, reading the level rows LANCZOS reaches beyond it too,
    so every output row sees the same source rows and weights as in one resize of the
    whole plan, and no seam shows. Only rounding differs: Pillow takes the box as 32-bit
    floats, which moves a stripe's filter centres by ~1e-5 pixel and leaves a few values
    in 100,000 one level off a single resize (tests/unit/test_region_stripes.py).
    """
    out_w, out_h = out
    bx0, by0, bx1, by1 = plan.box
    width, height = plan.size
    scale = (by1 - by0) / out_h  # level rows per output row
    support = LANCZOS_SUPPORT * max(scale, 1.0)
    margin = math.ceil(support) + 2  # floor/ceil below and Pillow's rounding of the reach
    budget = stripe_pixels or STRIPE_PIXELS
    rows = max(1, math.floor((budget / width - 2 * margin) / scale))
    lds = slide.level_downsamples[plan.level]
    image = Image.new("RGB", out)
    for o0 in range(0, out_h, rows):
        o1 = min(out_h, o0 + rows)
        top = by0 + o0 * scale
        bottom = by1 if o1 == out_h else by0 + o1 * scale
        r0 = max(0, math.floor(top - support) - 1)
        r1 = min(height, math.ceil(bottom + support) + 1)
        oy = plan.origin[1] + r0
        stripe = ReadPlan(plan.level, (plan.location[0], round(oy * lds)), (width, r1 - r0),
                          (bx0, top - r0, bx1, bottom - r0), (plan.origin[0], oy))
        image.paste(read_plan(slide, stripe, (out_w, o1 - o0), stored), (0, o0))
    return image


def transform(image: Image.Image, rotation: float, mirror: bool, quality: str, fmt: str,
              fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Mirror, then rotate clockwise, then apply the IIIF quality (spec order)."""
    if mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rotation = rotation % 360
    if rotation == 90:
        image = image.transpose(Image.Transpose.ROTATE_270)
    elif rotation == 180:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif rotation == 270:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif rotation:
        if fmt == "png":  # transparent corners, as the spec recommends
            image = image.convert("RGBA").rotate(-rotation, Image.Resampling.BICUBIC,
                                                 expand=True, fillcolor=(0, 0, 0, 0))
        else:
            image = image.rotate(-rotation, Image.Resampling.BICUBIC, expand=True,
                                 fillcolor=fill)
    if quality == "gray":
        image = image.convert("LA" if image.mode == "RGBA" else "L")
    elif quality == "bitonal":
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, fill)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image = image.convert("L").convert("1", dither=Image.Dither.NONE)
    return image

