"""Shared fixtures: generated slides and a running system (real processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import System, make_slides, running

# real S3 (moto), nginx and the latency/fault proxy, for any test that names them
# and a real PACS (Orthanc, DICOMweb) with DICOM slides made from the demo slide
pytest_plugins = ["tests.remote_servers", "tests.dicom_servers"]


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slides") / "root"
    make_slides(root)
    return root


@pytest.fixture(scope="module")
def system(slide_root: Path) -> Iterator[System]:
    with running(System(slide_root, workers=2)) as sysm:
        yield sysm


@pytest.fixture
def fresh_system(slide_root: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """A system of its own for tests that kill or restart components."""
    overrides = getattr(request, "param", {})
    with running(System(slide_root, **{"workers": 2, **overrides})) as sysm:
        yield sysm
