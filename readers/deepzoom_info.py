"""What every reader built on DeepZoomGenerator says about a slide, and its tile bounds.

Readers hand ``DeepZoomGenerator`` an object with OpenSlide's slide API (an OpenSlide
handle, or an adapter over DICOM frames), so the ``info`` reply and the out-of-range
check are the same for all of them.
"""

from __future__ import annotations

from typing import Any

import openslide
from PIL import Image

from config.errors import OutOfRange, SlideNotFound


def describe(name: str, slide: Any, dz: Any, tile_size: int, overlap: int,
             vendor: str | None = None) -> dict[str, Any]:
    """The ``info`` reply: DeepZoom geometry, levels, vendor, MPP, properties, images.
    ``vendor`` overrides the slide's own ``openslide.vendor`` property."""
    props = dict(slide.properties)
    dz_dims = [list(d) for d in dz.level_dimensions]
    width, height = dz_dims[-1]
    return {
        "slide": name,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "overlap": overlap,
        "dz_levels": dz.level_count,
        "dz_dimensions": dz_dims,
        "dz_tiles": [list(t) for t in dz.level_tiles],
        "level_dimensions": [list(d) for d in slide.level_dimensions],
        "level_downsamples": list(slide.level_downsamples),
        "vendor": vendor or props.get(openslide.PROPERTY_NAME_VENDOR),
        "mpp_x": _float(props.get(openslide.PROPERTY_NAME_MPP_X)),
        "mpp_y": _float(props.get(openslide.PROPERTY_NAME_MPP_Y)),
        "objective_power": props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        "properties": props,
        "associated": sorted(slide.associated_images),
    }


def check_tile(dz: Any, level: int, col: int, row: int) -> None:
    """OutOfRange unless (level, col, row) is a tile of ``dz``."""
    if not 0 <= level < dz.level_count:
        raise OutOfRange(f"level {level} outside 0..{dz.level_count - 1}")
    cols, rows = dz.level_tiles[level]
    if not (0 <= col < cols and 0 <= row < rows):
        raise OutOfRange(f"tile ({col}, {row}) outside level {level}'s {cols}x{rows} tiles")


def render_tile(slide: Any, dz: Any, level: int, col: int, row: int) -> Image.Image:
    """``dz.get_tile``'s pixels; for a sliver tile, the same steps on a one-pixel read.

    On an odd-sized level DeepZoomGenerator's arithmetic can give a tile of the grid a
    read of zero level pixels (a row or column under one level pixel at the far edge),
    and ``get_tile`` then fails with ZeroDivisionError. The tile exists in the grid the
    viewer was given, so it is drawn from the one level pixel it lies in.
    """
    location, slide_level, size = dz.get_tile_coordinates(level, (col, row))
    if min(size) > 0:
        return dz.get_tile(level, (col, row))
    tile = slide.read_region(location, slide_level, (max(1, size[0]), max(1, size[1])))
    profile = tile.info.get("icc_profile")
    color = slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
    tile = Image.composite(tile, Image.new("RGB", tile.size, f"#{color}"), tile)
    tile = tile.resize(tuple(dz.get_tile_dimensions(level, (col, row))),
                       Image.Resampling.LANCZOS)
    if profile is not None:
        tile.info["icc_profile"] = profile
    return tile


def associated_image(slide: Any, name: str, size: int, slide_name: str) -> Any:
    """The thumbnail or a named associated image, fitted in ``size`` x ``size``;
    SlideNotFound for a name the slide does not have."""
    if name == "thumbnail":
        return slide.get_thumbnail((size, size))
    if name not in slide.associated_images:
        raise SlideNotFound(f"{slide_name!r} has no associated image {name!r}")
    image = slide.associated_images[name]
    image.thumbnail((size, size))
    return image


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
