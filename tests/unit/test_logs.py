"""Structured logs and request ids (config/logs.py)."""

from __future__ import annotations

import json
import logging

from config.logs import (
    REQUEST_ID,
    JsonFormatter,
    _RequestIdFilter,
    new_request_id,
    request_id_from,
)


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("readers.factory", logging.WARNING, __file__, 1, message,
                               ("x",), exc_info)
    _RequestIdFilter().filter(record)
    return record


def test_json_line_has_the_fields_and_the_current_request_id() -> None:
    formatter = JsonFormatter("worker")
    token = REQUEST_ID.set("abc-1")
    try:
        line = formatter.format(_record("opened %s"))
    finally:
        REQUEST_ID.reset(token)
    obj = json.loads(line)
    assert obj["message"] == "opened x" and obj["request_id"] == "abc-1"
    assert obj["level"] == "WARNING" and obj["component"] == "worker"
    assert obj["logger"] == "readers.factory" and isinstance(obj["pid"], int)
    assert obj["time"].endswith("Z") and "T" in obj["time"]
    assert "\n" not in line


def test_no_request_id_outside_a_request_and_tracebacks_stay_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as exc:
        line = JsonFormatter("router").format(_record("failed %s", exc))
    obj = json.loads(line)
    assert "request_id" not in obj
    assert "ValueError: boom" in obj["exc_info"] and "\n" not in line


def test_request_ids_are_fresh_and_client_ids_are_checked() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(request_id_from(i) == i for i in ids)
    assert request_id_from("trace-42.a:b_c") == "trace-42.a:b_c"
    for bad in (None, 7, "", "a b", "x\ny", "é", "x" * 65, '"quoted"'):
        assert request_id_from(bad) is None
