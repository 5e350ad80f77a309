"""The whole system (router, workers, gateway as real processes) serving a PACS: the
viewer's paths give what OpenSlide gives on the same series' local files, and the PACS
password shows nowhere."""

from __future__ import annotations

import json
from pathlib import Path

from config.settings import Settings
from scripts.benchlib.dicom_slides import level_file
from scripts.benchlib.orthanc import OrthancServer
from tests.dicom_servers import PACS_PASSWORD, PACS_USER, DicomSeries
from tests.helpers import System
from workers.handler import RequestHandler


def test_the_whole_system_serves_a_pacs(dicom_slides: dict[str, DicomSeries],
                                        orthanc_pacs: OrthancServer) -> None:
    jpeg = dicom_slides["jpeg"]
    folder = str(jpeg.folder.parent)
    local_id = f"local/jpeg/{level_file(jpeg.files).name}"
    stores = f"pacs={orthanc_pacs.dicomweb_url},local={folder}"
    local = RequestHandler(Settings(stores=stores))
    system = System(Path(folder), workers=2, stores=stores, dicomweb_user=PACS_USER,
                    dicomweb_password=PACS_PASSWORD).start()
    slide = f"pacs/{jpeg.rel}"
    try:
        system.wait_ready()
        ws = system.ws()
        try:
            listed = ws.request({"id": 1, "op": "list", "prefix": "pacs/"})[0]
            names = {s["path"]: s["name"] for s in listed["slides"]}
            assert names[slide] == "Doe Jane0 · ACC-0000 · H&E jpeg"
            header, data = ws.tile(slide, 10, 1, 1)
            want = local.handle({"op": "tile", "slide": local_id, "level": 10, "col": 1,
                                 "row": 1})[1]
            assert header["ok"] and data == want
            info = ws.request({"id": 2, "op": "info", "slide": slide})[0]
            assert info["ok"] and info["vendor"] == "dicom" and info["width"] == 2000
            for bad, code in ((f"pacs/{jpeg.study}/x.y", "not_found"),
                              (f"pacs/{jpeg.study}/1.2.3", "not_found"),
                              (f"pacs/{dicom_slides['ct'].rel}", "bad_slide"),
                              (f"pacs/{jpeg.study}/../../local", "forbidden")):
                reply = ws.request({"id": 3, "op": "info", "slide": bad})[0]
                assert reply["error"]["code"] == code, bad
        finally:
            ws.close()
        status, _, body = system.get(f"/dz/{slide}.dzi")
        assert status == 200 and b'Width="2000"' in body
        status, _, body = system.get(f"/dz/{slide}_files/11/2_1.jpeg")
        assert status == 200 and body == local.handle(
            {"op": "tile", "slide": local_id, "level": 11, "col": 2, "row": 1})[1]
        status, _, body = system.get(f"/iiif/{slide}/0,0,1000,750/250,/0/default.png")
        assert status == 200 and body == local.handle(
            {"op": "region", "slide": local_id, "x": 0, "y": 0, "w": 1000, "h": 750,
             "out_w": 250, "out_h": 188, "format": "png", "quality": "default",
             "rotation": 0, "mirror": False})[1]
        stats = system.stats()
        remote = [w.get("remote", {}).get("pacs", {}) for w in stats["workers"]]
        assert sum(r.get("frames_fetched", 0) for r in remote) > 0
        assert PACS_PASSWORD not in json.dumps(stats) and PACS_PASSWORD not in system.logs()
    finally:
        system.stop()
        local.close()
