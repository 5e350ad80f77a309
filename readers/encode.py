"""The one image encoder every render path uses.

Tiles are byte-identical to a plain ``image.save(buf, fmt, quality=q)`` of what
``DeepZoomGenerator.get_tile`` returns, so the encoder passes Pillow no other option.
"""

from __future__ import annotations

import io

from PIL import Image


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """JPEG (alpha flattened on white, other modes made RGB or L) or PNG, as plain saves."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = _jpeg_ready(image)
        image.save(buf, "jpeg", quality=quality)
    else:
        image.save(buf, "png")
    return buf.getvalue()


def _jpeg_ready(image: Image.Image) -> Image.Image:
    if image.mode == "RGBA":
        bg = Image.new("RGB", image.size, (255, 255, 255))
        bg.paste(image, mask=image.split()[3])
        return bg
    return image.convert("L" if image.mode in ("1", "LA") else "RGB")
