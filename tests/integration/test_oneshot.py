"""``tilerouter tile`` / ``tilerouter info``: the same bytes and description without a
server as through one (``--via``), and one exit status per error code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, System, free_port
from workers.oneshot import EXIT_STATUS
from workers.serve import main


def test_tile_and_info_match_the_running_system(system: System, slide_root: Path,
                                                tmp_path: Path) -> None:
    ws = system.ws()
    try:
        header, served = ws.tile("sub/b.tiff", 10, 1, 1)
        assert header["ok"]
        info = ws.request({"op": "info", "slide": "sub/b.tiff"})[0]
    finally:
        ws.close()
    local, via = tmp_path / "local.jpeg", tmp_path / "via.jpeg"
    # the real console entry point, in its own process
    done = subprocess.run([sys.executable, "-m", "workers.serve", "tile", "--slides",
                           str(slide_root), "sub/b.tiff", "10", "1", "1", "-o", str(local)],
                          cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert local.read_bytes() == served
    assert main(["tile", "sub/b.tiff", "10", "1", "1", "-o", str(via),
                 "--via", system.base]) == 0
    assert via.read_bytes() == served
    out = tmp_path / "info.json"
    assert main(["info", "--slides", str(slide_root), "sub/b.tiff", "-o", str(out)]) == 0
    described = json.loads(out.read_text())
    assert main(["info", "sub/b.tiff", "-o", str(out), "--via", system.base]) == 0
    assert json.loads(out.read_text()) == described
    assert {k: v for k, v in info.items() if k not in ("id", "ok")} == described


@pytest.mark.parametrize(("args", "code"), [
    (["tile", "nope.tiff", "10", "0", "0"], "not_found"),
    (["tile", "a.tiff", "99", "0", "0"], "out_of_range"),
    (["tile", "a.tiff", "10", "-1", "0"], "bad_request"),
    (["tile", "../outside-secret.tiff", "10", "0", "0"], "forbidden"),
    (["tile", "escape.tiff", "8", "0", "0"], "forbidden"),
    (["tile", "notaslide.tiff", "8", "0", "0"], "bad_slide"),
    (["info", "notaslide.tiff"], "bad_slide"),
])
def test_each_error_has_its_exit_status(args: list[str], code: str, slide_root: Path,
                                        system: System, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main([*args, "--slides", str(slide_root), "-o", out]) == EXIT_STATUS[code]
    assert f": {code}: " in capsys.readouterr().err
    if "-1" in args or args[1].startswith(".."):
        return  # refused before the request is sent; the gateway's check is tested elsewhere
    assert main([*args, "-o", out, "--via", system.base]) == EXIT_STATUS[code]
    err = capsys.readouterr().err
    assert f": {code}: " in err and "(request id " in err


def test_unreachable_gateway_and_bad_settings(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["info", "a.tiff", "-o", out, "--via", dead]) == EXIT_STATUS["unavailable"]
    assert ": unavailable: cannot reach the gateway" in capsys.readouterr().err
    assert main(["info", "a.tiff", "--tile-size", "3", "-o", out]) == 2
    assert "tile_size" in capsys.readouterr().err
    assert len(set(EXIT_STATUS.values())) == 12 and 0 not in EXIT_STATUS.values()
