"""A large slide root lists in full through router and gateway (pages, not one frame)."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.benchlib.system import System


def test_thousands_of_slides_list_through_the_system(tmp_path: Path) -> None:
    names = [f"study-{i // 100:03d}/slide-{i:05d}-{'x' * 40}.svs" for i in range(3000)]
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")  # listing never opens a slide
    system = System(tmp_path, workers=1).start()
    try:
        system.wait_ready()
        status, _, body = system.get("/slides")
        reply = json.loads(body)
        assert status == 200 and reply["total"] == 3000 and "next" not in reply
        assert [s["path"] for s in reply["slides"]] == sorted(names)
        status, _, body = system.get("/slides?offset=2990&limit=50&prefix=study-029/")
        page = json.loads(body)
        assert page["total"] == 100 and len(page["slides"]) == 0  # past the folder's end
        status, _, body = system.get("/slides?limit=10&prefix=study-029/")
        page = json.loads(body)
        assert [s["path"] for s in page["slides"]] == sorted(names)[2900:2910]
        assert page["next"] == 10
        ws = system.ws()
        try:
            header, _ = ws.request({"id": 1, "op": "list", "offset": 1000, "limit": 5})
            assert header["ok"] and len(header["slides"]) == 5 and header["next"] == 1005
        finally:
            ws.close()
    finally:
        system.stop()
