"""The viewer on a slide from a PACS (a real Orthanc over DICOMweb): the title and the
side panel show the listing's readable name (patient · accession · description), the
study's group is named patient · accession, while the ids stay the keys (URL hash,
tooltips, panel path)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.benchlib import orthanc
from scripts.benchlib.dicom_slides import make_dicom_slide, series_uids
from tests.browser.conftest import Processes, Server
from tests.helpers import free_port

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"browser tests need the system Chromium at {CHROMIUM}"),
]

NAME = "Doe Jane · ACC-0042 · H&E liver"


@pytest.fixture(scope="module")
def pacs_server(slide_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Server, str]]:
    """The whole system with a PACS store (one small series) beside a local one; yields
    it and the series' slide id."""
    why = orthanc.missing()
    if why:
        pytest.skip(f"PACS: {why}")
    pytest.importorskip("wsidicomizer")
    files = make_dicom_slide(tmp_path_factory.mktemp("pacs-slide"), width=900, height=700,
                             patient="Doe^Jane", accession="ACC-0042",
                             description="H&E liver")
    study, series = series_uids(files)
    with orthanc.OrthancServer() as pacs:
        pacs.upload(files)
        procs = Processes(tmp_path_factory.mktemp("pacs-serve-logs"))
        port, stats_port = free_port(), free_port()
        procs.spawn("serve", ["-m", "workers.serve", "serve", "--store",
                              f"pacs={pacs.dicomweb_url}", "--store", f"local={slide_dir}",
                              "--port", str(port), "--stats-port", str(stats_port),
                              "--workers", "1", "--no-browser"])
        srv = Server(port, stats_port, procs)
        try:
            srv.wait_ready(n_slides=3, n_workers=1)
            yield srv, f"pacs/{study}/{series}"
        finally:
            procs.stop_all()


@pytest.mark.parametrize("via", ["card", "url"])
def test_title_is_the_readable_name_and_the_id_stays_the_key(
        page: Any, pacs_server: tuple[Server, str], via: str) -> None:
    srv, slide_id = pacs_server
    listed = {s["path"]: s for s in srv.slides()["slides"]}
    assert listed[slide_id]["name"] == NAME
    assert listed[slide_id]["group"] == "Doe Jane · ACC-0042"  # the study's readable name
    if via == "card":
        page.goto(f"{srv.base}/")
        study_folder = slide_id.rsplit("/", 1)[0]
        head = page.locator(f'.slide-group[data-folder="{study_folder}"] .group-name')
        assert head.inner_text() == "Doe Jane · ACC-0042"
        assert head.get_attribute("title") == study_folder
        page.locator(f'.slide-card[data-path="{slide_id}"]').click()
    else:  # opened from a link, maybe before the slide list arrived
        page.goto(f"{srv.base}/#slide={urllib.parse.quote(slide_id, safe='')}")
    page.wait_for_function("() => window.tilerouter && window.tilerouter.tilesReceived > 0",
                           timeout=20_000)
    page.wait_for_function("(n) => document.getElementById('slide-title').textContent === n",
                           arg=NAME, timeout=10_000)
    assert page.get_attribute("#slide-title", "title") == slide_id
    assert page.title() == f"{NAME} · tilerouter"
    assert page.inner_text("#info-name") == NAME
    assert page.inner_text("#info-path") == slide_id
    assert urllib.parse.quote(slide_id, safe="") in page.evaluate("location.hash")
