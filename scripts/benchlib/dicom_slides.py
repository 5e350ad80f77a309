"""DICOM whole-slide images made here: the generated demo slide converted by wsidicomizer.

The demo slide (Aperio layout: levels, label, macro, thumbnail) is read through OpenSlide
(wsidicomizer's OpenSlide source: opentile cannot take the demo's LZW label) and each
level written as a DICOM VL Whole Slide Microscopy instance with tiles of ``tile`` px,
encoded as baseline JPEG (``jpeg``: lossy frames, as most scanners write), JPEG 2000
lossless (``j2k``) or uncompressed (``raw``). Patient name, accession number and series
description are set so a listing has something readable to show.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from readers.demo_slide import write_demo_slide

log = logging.getLogger(__name__)

ENCODINGS = ("jpeg", "j2k", "raw")


def _encoding(name: str) -> object:
    from wsidicom.codec import Jpeg2kSettings, JpegSettings, NumpySettings
    from wsidicom.codec.settings import Channels, Subsampling

    if name == "jpeg":
        return JpegSettings(quality=90, channels=Channels.YBR, subsampling=Subsampling.R444)
    if name == "j2k":
        return Jpeg2kSettings(levels=0, channels=Channels.RGB)  # 0 dB: lossless
    if name == "raw":
        return NumpySettings()
    raise ValueError(f"encoding must be one of {ENCODINGS}")


def make_dicom_slide(folder: str | os.PathLike[str], *, encoding: str = "jpeg",
                     width: int = 2000, height: int = 1500, tile: int = 256, seed: int = 0,
                     patient: str = "Doe^Jane", accession: str = "ACC-0001",
                     description: str = "H&E demo") -> list[Path]:
    """Write one WSI series (levels, label, overview, thumbnail) into ``folder`` (made
    if missing); returns its .dcm files. About a second for 2000 x 1500."""
    from pydicom import Dataset
    from wsidicomizer import WsiDicomizer
    from wsidicomizer.wsidicomizer import SourceIdentifier

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    extra = Dataset()
    extra.PatientName = patient
    extra.PatientID = f"P-{seed:04d}"
    extra.AccessionNumber = accession
    extra.SeriesDescription = description
    work = tempfile.mkdtemp(prefix="tilerouter-dicomize-")
    try:
        svs = write_demo_slide(Path(work) / "demo.svs", width, height, tile=tile,
                               seed=seed, aperio=True)
        files = WsiDicomizer.convert(svs, out, tile_size=tile, workers=1,
                                     encoding=_encoding(encoding),
                                     metadata_post_processor=extra,
                                     preferred_source=SourceIdentifier.OPENSLIDE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %d DICOM instances (%s) to %s", len(files), encoding, out)
    return [Path(f) for f in files]


def series_uids(files: list[Path]) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID) of one series' files."""
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def level_file(files: list[Path]) -> Path:
    """The file OpenSlide opens the series by: its largest level (any of them works)."""
    import pydicom

    def width(path: Path) -> int:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        volume = "VOLUME" in list(ds.ImageType)
        return int(ds.TotalPixelMatrixColumns) if volume else -1

    return max(files, key=width)


def stored_frames(path: Path) -> tuple[list[bytes], int, int]:
    """Every stored frame of one instance (encapsulated or not) with the instance's tile
    columns and total pixel columns: what a passed-through tile must equal."""
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    n = int(getattr(ds, "NumberOfFrames", 1))
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=n)]
    else:
        size = len(ds.PixelData) // n
        frames = [bytes(ds.PixelData[i * size:(i + 1) * size]) for i in range(n)]
    return frames, int(ds.Columns), int(ds.TotalPixelMatrixColumns)
