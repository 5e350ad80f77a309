"""Output formats and region qualities: the vocabulary every layer checks against."""

TILE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
REGION_QUALITIES = ("default", "color", "gray", "bitonal")
MAX_REGION_EDGE = 65500  # largest output edge of a "region" (JPEG stops at 65535)
ASSOCIATED_QUALITY = 85  # associated images and thumbnails are JPEG at this quality
