"""A slide that kills every worker that touches it is quarantined instead of killing
worker after worker; other slides keep being served throughout.

The crash is simulated (TILEROUTER_TEST_CRASH_SLIDE makes the worker os._exit on that
slide): a file that crashes OpenSlide natively cannot be produced on demand."""

from __future__ import annotations

import pytest

from tests.helpers import System, wait_for


@pytest.fixture
def crashy(slide_root, request) -> System:  # type: ignore[no-untyped-def]
    sysm = System(slide_root, workers=2, request_timeout=15.0)
    sysm.component_env = {"workers": {"TILEROUTER_TEST_CRASH_SLIDE": "c.tiff"}}
    sysm.start()
    request.addfinalizer(sysm.stop)
    return sysm


def test_crashing_slide_is_quarantined(crashy: System) -> None:
    ws = crashy.ws()
    try:
        codes = []
        for i in range(4):
            header, _ = ws.request({"op": "info", "slide": "c.tiff"})
            codes.append(header["error"]["code"])
            if codes[-1] == "quarantined":
                break
            crashy.wait_ready()  # the launcher brings both workers back
            assert ws.tile("a.tiff", 10, i, 0)[0]["ok"] is True  # others still served
        assert codes[:2] == ["worker_lost", "worker_lost"]
        assert codes[-1] == "quarantined", codes
        deaths = crashy.stats()["routing"]["worker_deaths"]
        header, _ = ws.request({"op": "info", "slide": "c.tiff"})
        assert header["error"]["code"] == "quarantined"  # refused at once now
        assert crashy.stats()["routing"]["worker_deaths"] == deaths
        assert crashy.stats()["routing"]["quarantined"] == ["c.tiff"]
        wait_for(lambda: ws.tile("sub/b.tiff", 9, 0, 0)[0]["ok"], 15, 0.1, "normal service")
    finally:
        ws.close()
