"""Wire protocol: frame encode/parse, malformed-frame rejection and client request checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import (
    BadRequest,
    MessageTooLarge,
    OutOfRange,
    ProtocolError,
    TileRouterError,
    UnknownOp,
)
from readers.slide_ids import MAX_SLIDE_ID as MAX_SLIDE_PATH
from router import protocol
from router.protocol import (
    COMMANDS,
    HEARTBEAT,
    MAX_HEADER_BYTES,
    REPLY,
    REQUEST,
    VERSION,
    encode,
    parse,
    payload_bytes,
)
from wsgateway.requests import check_client_id, check_request

# --- frames ------------------------------------------------------------------------------


def test_round_trip_without_payload() -> None:
    header = {"rid": 7, "op": "info", "slide": "a/b.tiff", "nested": {"x": [1, 2]}}
    msg = parse(encode(REQUEST, header))
    assert (msg.command, msg.header, msg.payload, msg.identity) == (REQUEST, header, None, None)
    assert msg.name == "REQUEST"


def test_round_trip_with_payload_and_identity() -> None:
    """On ROUTER sockets the identity frame comes first and must be split off again."""
    frames = encode(REPLY, {"tid": 1, "ok": True}, payload=b"\xff\xd8tile", identity=b"\x00id")
    assert frames[0] == b"\x00id" and len(frames) == 5
    msg = parse(frames, routed=True)
    assert msg.identity == b"\x00id"
    assert msg.command == REPLY and msg.header == {"tid": 1, "ok": True}
    assert payload_bytes(msg.payload) == b"\xff\xd8tile"


def test_payload_stays_the_received_frame() -> None:
    """Tile bytes must be forwarded as the zmq.Frame they arrived in (no copy)."""
    frames = [zmq.Frame(b) for b in encode(REPLY, {"ok": True}, payload=b"x" * 1000,
                                           identity=b"gw")]
    msg = parse(frames, routed=True)
    assert isinstance(msg.payload, zmq.Frame) and msg.payload is frames[-1]
    assert payload_bytes(msg.payload) == b"x" * 1000
    assert msg.identity == b"gw" and msg.header == {"ok": True}
    assert payload_bytes(None) == b""


def test_header_of_exactly_max_bytes_is_accepted() -> None:
    raw = b'{"a":"' + b"x" * (MAX_HEADER_BYTES - 8) + b'"}'
    assert len(raw) == MAX_HEADER_BYTES
    assert parse([VERSION, HEARTBEAT, raw]).header["a"] == "x" * (MAX_HEADER_BYTES - 8)


@pytest.mark.parametrize(
    ("frames", "routed"),
    [
        ([], False),
        ([], True),
        ([b"id"], True),
        ([VERSION, REQUEST], False),
        ([VERSION, REQUEST, b"{}", b"p", b"extra"], False),
        ([b"id", VERSION, REQUEST], True),
        ([b"TR0", REQUEST, b"{}"], False),
        ([b"", REQUEST, b"{}"], False),
        ([VERSION, b"\x09", b"{}"], False),
        ([VERSION, b"", b"{}"], False),
        ([VERSION, REQUEST, b"{not json"], False),
        ([VERSION, REQUEST, b""], False),
        ([VERSION, REQUEST, b"\xff\xfe\xfd\xfc"], False),
        ([VERSION, REQUEST, b'{"a": "\xff"}'], False),
        ([VERSION, REQUEST, b"[1, 2]"], False),
        ([VERSION, REQUEST, b"3"], False),
        ([VERSION, REQUEST, b'"text"'], False),
        ([VERSION, REQUEST, b"null"], False),
        ([VERSION, REQUEST, b'{"a":"' + b"x" * MAX_HEADER_BYTES + b'"}'], False),
        ([VERSION, REQUEST, "{}"], False),
        (["id", VERSION, REQUEST, b"{}"], True),
        ([VERSION, REQUEST, None], False),
    ],
    ids=lambda v: repr(v)[:40] if not isinstance(v, bool) else str(v),
)
def test_malformed_frames_raise_protocol_error(frames: list[Any], routed: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(frames, routed=routed)
    assert info.value.code == "protocol"


_json_noise = st.text(alphabet='{}[]":,.-+0123456789eEaflnrstu\\ ', max_size=40).map(str.encode)
_frame = st.one_of(st.binary(max_size=40), st.sampled_from([VERSION, *COMMANDS]), _json_noise)
_shaped = st.tuples(
    st.sampled_from([VERSION, b"TR2", b""]),
    st.sampled_from([*COMMANDS, b"\x00", b"\x01\x01"]),
    st.one_of(st.binary(max_size=60), _json_noise),
    st.lists(st.binary(max_size=8), max_size=2),
).map(lambda t: [t[0], t[1], t[2], *t[3]])


@settings(max_examples=200, deadline=None, database=None)
@given(frames=st.one_of(st.lists(_frame, max_size=6), _shaped), routed=st.booleans())
def test_parse_raises_only_protocol_error(frames: list[bytes], routed: bool) -> None:
    """Whatever a peer sends, parse either returns a Message with a dict header or raises
    ProtocolError; anything else would escape the router's malformed-message path."""
    try:
        msg = parse(frames, routed=routed)
    except ProtocolError:
        return
    assert isinstance(msg.header, dict) and msg.command in COMMANDS


def test_deeply_nested_header_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse([VERSION, REQUEST, b"[" * 50_000])


# --- client requests ---------------------------------------------------------------------


def test_tile_request_canonical_form_drops_unknown_fields() -> None:
    req = {"op": "tile", "slide": "a/b.tiff", "level": 3, "col": 1, "row": 2,
           "rid": 9, "tid": 4, "evil": {"x": 1}}
    assert check_request(req) == {"op": "tile", "slide": "a/b.tiff", "level": 3, "col": 1,
                                  "row": 2}
    assert check_request({**req, "format": "png"})["format"] == "png"
    assert "format" not in check_request({**req, "format": None})


def test_info_list_associated_requests() -> None:
    assert check_request({"op": "info", "slide": "s.svs", "x": 1}) == {"op": "info",
                                                                        "slide": "s.svs"}
    assert check_request({"op": "list", "slide": 5, "junk": True}) == {"op": "list"}
    assert check_request({"op": "associated", "slide": "s", "name": "label", "size": 64}) == {
        "op": "associated", "slide": "s", "name": "label", "size": 64}
    assert check_request({"op": "associated", "slide": "s", "name": "thumbnail"})["size"] == 256


def test_slide_path_length_limit() -> None:
    assert check_request({"op": "info", "slide": "a" * MAX_SLIDE_PATH})["slide"] == (
        "a" * MAX_SLIDE_PATH)
    with pytest.raises(BadRequest, match="'slide'"):
        check_request({"op": "info", "slide": "a" * (MAX_SLIDE_PATH + 1)})


_TILE = {"op": "tile", "slide": "a.tiff", "level": 0, "col": 0, "row": 0}


@pytest.mark.parametrize(
    ("obj", "cls", "field"),
    [
        ([1, 2], BadRequest, "object"),
        ("tile", BadRequest, "object"),
        ({}, BadRequest, "'op'"),
        ({"op": 3}, BadRequest, "'op'"),
        ({"op": None}, BadRequest, "'op'"),
        ({"op": "delete", "slide": "a"}, UnknownOp, "delete"),
        ({"op": "TILE"}, UnknownOp, "TILE"),
        ({"op": "info"}, BadRequest, "'slide'"),
        ({"op": "info", "slide": 5}, BadRequest, "'slide'"),
        ({"op": "info", "slide": ["a"]}, BadRequest, "'slide'"),
        ({"op": "info", "slide": ""}, BadRequest, "'slide'"),
        ({**_TILE, "level": True}, BadRequest, "'level'"),
        ({**_TILE, "level": 1.0}, BadRequest, "'level'"),
        ({**_TILE, "row": "1"}, BadRequest, "'row'"),
        ({k: v for k, v in _TILE.items() if k != "col"}, BadRequest, "'col'"),
        ({**_TILE, "col": -1}, OutOfRange, "'col'"),
        ({**_TILE, "row": (1 << 31) + 1}, OutOfRange, "'row'"),
        ({**_TILE, "format": "gif"}, BadRequest, "'format'"),
        ({**_TILE, "format": "JPEG"}, BadRequest, "'format'"),
        ({"op": "associated", "slide": "s"}, BadRequest, "'name'"),
        ({"op": "associated", "slide": "s", "name": "n" * 129}, BadRequest, "'name'"),
        ({"op": "associated", "slide": "s", "name": "t", "size": 15}, OutOfRange, "'size'"),
        ({"op": "associated", "slide": "s", "name": "t", "size": 1025}, OutOfRange, "'size'"),
        ({"op": "associated", "slide": "s", "name": "t", "size": None}, BadRequest, "'size'"),
    ],
)
def test_bad_requests(obj: Any, cls: type[TileRouterError], field: str) -> None:
    """Each malformed request gets exactly the right error class (hence wire code), and the
    message names the offending field."""
    with pytest.raises(TileRouterError) as info:
        check_request(obj)
    assert type(info.value) is cls
    assert info.value.to_wire()["code"] == cls.code
    assert field in info.value.message


def test_error_codes_of_request_errors() -> None:
    """The codes are public contract: unknown_op and out_of_range in particular."""
    with pytest.raises(UnknownOp) as info:
        check_request({"op": "nope"})
    assert info.value.code == "unknown_op" and isinstance(info.value, BadRequest)
    with pytest.raises(OutOfRange) as info2:
        check_request({**_TILE, "col": -5})
    assert info2.value.code == "out_of_range"


def test_associated_size_bounds_follow_the_setting() -> None:
    base = {"op": "associated", "slide": "s", "name": "thumbnail"}
    assert check_request({**base, "size": 16}, max_associated_size=64)["size"] == 16
    assert check_request({**base, "size": 64}, max_associated_size=64)["size"] == 64
    with pytest.raises(OutOfRange):
        check_request({**base, "size": 65}, max_associated_size=64)


def test_default_associated_size_respects_the_limit() -> None:
    req = check_request({"op": "associated", "slide": "s", "name": "thumbnail"},
                        max_associated_size=64)
    assert req["size"] <= 64


@pytest.mark.parametrize("fmt", [[], {"a": 1}])
def test_unhashable_format_is_a_bad_request(fmt: Any) -> None:
    with pytest.raises(BadRequest, match="'format'"):
        check_request({**_TILE, "format": fmt})


@pytest.mark.parametrize(("obj", "expected"),
                         [({"id": 5}, 5), ({"id": -1}, -1), ({"id": "abc"}, "abc"),
                          ({"id": "x" * 256}, "x" * 256), ({}, None), ({"id": None}, None)])
def test_client_id_accepted(obj: dict, expected: Any) -> None:
    assert check_client_id(obj) == expected


@pytest.mark.parametrize(("rid", "cls"),
                         [(1.5, BadRequest), (True, BadRequest), (False, BadRequest),
                          ([1], BadRequest), ({"a": 1}, BadRequest),
                          ("x" * 257, MessageTooLarge)])
def test_client_id_rejected(rid: Any, cls: type[TileRouterError]) -> None:
    with pytest.raises(cls) as info:
        check_client_id({"id": rid})
    assert type(info.value) is cls and "'id'" in info.value.message


def test_header_json_is_compact_and_parseable() -> None:
    """encode writes compact JSON so small headers stay small on the wire."""
    frames = encode(protocol.REGISTER, {"pid": 1, "slides": ["a", "b"]})
    assert frames[2] == b'{"pid":1,"slides":["a","b"]}'
    assert json.loads(frames[2]) == {"pid": 1, "slides": ["a", "b"]}
