"""Pytest fixtures for DICOMweb: DICOM WSI series made from the demo slide, and a real
Orthanc PACS holding them (``scripts/benchlib/orthanc.py``); skipped with the reason
when Orthanc or wsidicomizer is missing."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.benchlib import orthanc
from scripts.benchlib.dicom_slides import ENCODINGS, make_dicom_slide, series_uids

__all__ = ["DicomSeries", "dicom_slides", "orthanc_pacs"]

PACS_USER, PACS_PASSWORD = "tilerouter", "pacs-Secret-42"  # Orthanc's basic auth, tests only


@dataclass
class DicomSeries:
    """One series: its files (a folder per series) and UIDs."""

    name: str
    folder: Path
    files: list[Path]
    study: str
    series: str
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def rel(self) -> str:
        return f"{self.study}/{self.series}"


def _not_wsi(folder: Path, modality: str, seed: int) -> DicomSeries:
    """A single-frame Secondary Capture image (modality ``modality``): a series that is
    no whole-slide image."""
    import numpy as np
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, \
        ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = modality, f"Other^{modality}", f"O-{seed}"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.full((64, 64), seed, np.uint8).tobytes()
    path = folder / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    return DicomSeries(modality, folder, [path], str(ds.StudyInstanceUID),
                       str(ds.SeriesInstanceUID))


@pytest.fixture(scope="session")
def dicom_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DicomSeries]:
    """``jpeg``, ``j2k``, ``raw``: the 2000 x 1500 demo slide as DICOM WSI (one folder
    each); ``not_wsi`` (modality SM, but a Secondary Capture) and ``ct`` (modality CT)."""
    if importlib.util.find_spec("wsidicomizer") is None:
        pytest.skip("wsidicomizer not installed (.venv/bin/pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("dicom")
    out: dict[str, DicomSeries] = {}
    for i, enc in enumerate(ENCODINGS):
        meta = {"patient": f"Doe^Jane{i}", "accession": f"ACC-{i:04d}",
                "description": f"H&E {enc}"}
        files = make_dicom_slide(root / enc, encoding=enc, **meta)
        out[enc] = DicomSeries(enc, root / enc, files, *series_uids(files), meta=meta)
    out["not_wsi"] = _not_wsi(root / "not_wsi", "SM", 1)
    out["ct"] = _not_wsi(root / "ct", "CT", 2)
    return out


@pytest.fixture(scope="session")
def orthanc_pacs(dicom_slides: dict[str, DicomSeries]) -> Iterator[orthanc.OrthancServer]:
    """One Orthanc per test process (basic auth on), holding every ``dicom_slides``
    series."""
    why = orthanc.missing()
    if why:
        pytest.skip(f"PACS: {why}")
    with orthanc.OrthancServer(user=PACS_USER, password=PACS_PASSWORD) as server:
        for series in dicom_slides.values():
            server.upload(series.files)
        yield server
