"""DICOM frames as OpenSlide reads them: decoding, colour, ICC profile, associated images.

Split from ``dicom_reader.py``: what makes a frame's pixels (and a passed-through frame's
bytes) equal to OpenSlide's for the same DICOM file, independent of how frames arrive.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

import imagecodecs
from PIL import Image
from wsidicom import WsiDicom

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_APP0, _APP14, _SOS = 0xE0, 0xEE, 0xDA
_SOFS = frozenset({0xC0, 0xC1, 0xC2})  # Huffman baseline/extended/progressive
_RGB_IDS = (0x52, 0x47, 0x42)


class Associated(Mapping[str, Image.Image]):
    """Label, macro (DICOM OVERVIEW) and thumbnail, read from the PACS when first asked."""

    def __init__(self, wsi: WsiDicom) -> None:
        self._wsi = wsi
        self._names = [n for n, present in (
            ("label", wsi.labels), ("macro", wsi.overviews),
            ("thumbnail", wsi.pyramid.thumbnails)) if present]

    def __getitem__(self, name: str) -> Image.Image:
        if name not in self._names:
            raise KeyError(name)
        if name == "label":
            return self._wsi.read_label().convert("RGBA")
        if name == "macro":
            return self._wsi.read_overview().convert("RGBA")
        return self._wsi.read_thumbnail((1024, 1024)).convert("RGBA")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def icc_profile(wsi: WsiDicom) -> bytes | None:
    """The ICC profile of the series' first optical path (where OpenSlide reads it)."""
    ds = wsi.levels[0].default_instance.dataset
    for path in getattr(ds, "OpticalPathSequence", None) or []:
        profile = getattr(path, "ICCProfile", None)
        if profile:
            return bytes(profile)
    return None


def decode_frame(frame: bytes, syntax: str, photometric: str, decoder: Any) -> Image.Image:
    """RGB (or L) pixels of one frame, decoded as OpenSlide decodes it."""
    if syntax == JPEG_BASELINE:
        if photometric == "RGB":  # OpenSlide decodes as the header says, whatever markers
            return Image.fromarray(imagecodecs.jpeg8_decode(frame, colorspace="RGB",
                                                            outcolorspace="RGB"))
        image = Image.open(io.BytesIO(frame))
        image.load()
    else:
        image = decoder.decode(frame)
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def standalone_ycbcr(frame: bytes) -> bool:
    """True when a decoder given only ``frame`` (a browser) reads it as OpenSlide does
    for a YBR photometric: baseline/progressive Huffman JPEG that libjpeg's rules read as
    YCbCr, with no ICC/EXIF segment. Anything else is rendered, never passed through."""
    if frame[:2] != b"\xff\xd8":
        return False
    i, jfif, adobe_rgb, ids = 2, False, False, ()
    while i + 4 <= len(frame) and frame[i] == 0xFF:  # bounded: i grows every pass
        marker = frame[i + 1]
        length = int.from_bytes(frame[i + 2:i + 4], "big")
        seg = frame[i + 4:i + 2 + length]
        if marker == _APP0 and seg.startswith(b"JFIF\0"):
            jfif = True
        elif marker == _APP14 and seg.startswith(b"Adobe") and len(seg) >= 12:
            adobe_rgb = seg[11] == 0
        elif marker in (0xE1, 0xE2):
            return False
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SOFS or len(seg) < 6 + 3 * 3 or seg[5] != 3:
                return False
            ids = (seg[6], seg[9], seg[12])
        elif marker == _SOS:
            return bool(ids) and not adobe_rgb and (jfif or ids != _RGB_IDS)
        i += 2 + length
    return False
