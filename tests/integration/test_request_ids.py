"""One request traced across processes: JSON log lines from every component, the
request id from browser to worker and back in errors (real processes)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import System, running, wait_for


@pytest.fixture(scope="module")
def json_system(slide_root: Path) -> Iterator[System]:
    with running(System(slide_root, workers=2, log_level="DEBUG", log_format="json")) as sysm:
        yield sysm


def log_lines(sysm: System) -> list[dict]:
    """Every line of every component's log, each parsed as JSON (fails if one is not)."""
    lines = []
    for path in sorted(sysm.rundir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"{path.name}: not JSON: {line[:200]!r}") from None
    return lines


def test_a_client_request_id_reaches_the_worker_logs(json_system: System) -> None:
    ws = json_system.ws()
    try:
        header, _ = ws.request({"op": "tile", "slide": "sub/b.tiff", "level": 9, "col": 0,
                                "row": 0, "request_id": "trace-me-1"})
        assert header["ok"] and "request_id" not in header  # tiles carry no id
        header, _ = ws.request({"op": "tile", "slide": "notaslide.tiff", "level": 9,
                                "col": 0, "row": 0, "request_id": "trace-me-2"})
        assert header["error"]["code"] == "bad_slide"
        assert header["error"]["request_id"] == "trace-me-2"
        header, _ = ws.request({"op": "tile", "slide": "sub/b.tiff", "level": 99, "col": 0,
                                "row": 0})  # no id given: the gateway made one
        made = header["error"]["request_id"]
        assert header["error"]["code"] == "out_of_range" and made
        ws.send("{oops")
        assert ws.recv()[0]["error"]["request_id"]  # even a malformed message gets one
    finally:
        ws.close()

    def traced() -> bool:
        return any(line.get("request_id") == "trace-me-1" and "opened sub/b.tiff"
                   in line["message"] for line in log_lines(json_system))
    wait_for(traced, 10, what="the worker's log line about trace-me-1")
    lines = log_lines(json_system)
    opened = next(x for x in lines if x.get("request_id") == "trace-me-1")
    assert opened["component"] == "worker" and opened["logger"] == "workers.reader_cache"
    assert {"time", "level", "pid"} <= set(opened)
    assert {x["component"] for x in lines} >= {"router", "worker", "gateway", "launcher"}


def test_http_request_id_header_is_honoured_and_echoed(json_system: System) -> None:
    for path in ("/dz/nope.tiff_files/10/0_0.jpeg", "/info/nope.tiff"):
        status, headers, body = json_system.get(path, headers={"X-Request-Id": "http-7"})
        assert status == 404
        assert headers["X-Request-Id"] == "http-7"
        assert json.loads(body)["error"]["request_id"] == "http-7"
    status, headers, body = json_system.get("/dz/nope.tiff_files/10/0_0.jpeg",
                                            headers={"X-Request-Id": "bad id\tx"})
    made = json.loads(body)["error"]["request_id"]
    assert made != "bad id\tx" and headers["X-Request-Id"] == made


def test_a_crash_names_the_request_in_the_router_log(slide_root: Path) -> None:
    sysm = System(slide_root, workers=2, log_format="json", max_retries=0)
    sysm.component_env = {"workers": {"TILEROUTER_TEST_CRASH_SLIDE": "c.tiff"}}
    try:
        sysm.start()
        req = urllib.request.Request(sysm.base + "/dz/c.tiff_files/8/0_0.jpeg",
                                     headers={"X-Request-Id": "crash-1"})
        try:
            urllib.request.urlopen(req, timeout=15)
            raise AssertionError("the crashing slide was served")
        except urllib.error.HTTPError as err:
            assert err.code == 502
            error = json.loads(err.read())["error"]
            assert (error["code"], error["request_id"]) == ("worker_lost", "crash-1")

        def logged() -> bool:
            return any(x["component"] == "router" and "crash-1" in x["message"]
                       for x in log_lines(sysm))
        wait_for(logged, 10, what="the router's log line naming crash-1")
    finally:
        sysm.stop()
