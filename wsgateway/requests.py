"""The edge check of a client request, made once, where requests enter the system.

Every client request (websocket, HTTP, IIIF) becomes its canonical form here, with
only the fields its op knows, each checked for type and bounds and the slide id for
syntax; the hops behind the gateway only re-check what they read
(``router.requests.check_relayed``).
"""

from __future__ import annotations

from typing import Any

from config.errors import BadRequest, MessageTooLarge, OutOfRange, UnknownOp
from readers.formats import MAX_REGION_EDGE, REGION_QUALITIES, TILE_FORMATS
from readers.slide_ids import MAX_SLIDE_ID, normalize_slide_path
from router.requests import MAX_LIST_PAGE, OPS


def check_request(obj: Any, max_associated_size: int = 1024) -> dict[str, Any]:
    """Validate a client request; return its canonical form (only known fields).

    Raises BadRequest/UnknownOp/OutOfRange with a message that names the offending field,
    Forbidden for a slide path that could leave the slide root.
    """
    if not isinstance(obj, dict):
        raise BadRequest("request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise BadRequest("field 'op' is required and must be a string")
    if op not in OPS:
        raise UnknownOp(f"unknown op {op[:32]!r}; expected one of {', '.join(OPS)}")
    req: dict[str, Any] = {"op": op}
    if op == "list":  # optional paging over the stores' (cached) listing
        if "offset" in obj:
            req["offset"] = _int(obj, "offset", 0, 1 << 31)
        if "limit" in obj:
            req["limit"] = _int(obj, "limit", 1, MAX_LIST_PAGE)
        if obj.get("prefix") not in (None, ""):
            req["prefix"] = _string(obj, "prefix", MAX_SLIDE_ID)
        return req
    # canonical, root-confined syntax (Forbidden otherwise); symlinks are the worker's job
    req["slide"] = normalize_slide_path(_string(obj, "slide", MAX_SLIDE_ID))
    if op == "tile":
        for key in ("level", "col", "row"):
            req[key] = _int(obj, key, 0, 1 << 31)
        if obj.get("prefetch") is True:  # render into the cache, reply without bytes
            req["prefetch"] = True
        fmt = obj.get("format", None)
        if fmt is not None:
            if not isinstance(fmt, str) or fmt not in TILE_FORMATS:
                raise BadRequest(f"field 'format' must be one of {', '.join(TILE_FORMATS)}")
            req["format"] = fmt
    elif op == "associated":
        req["name"] = _string(obj, "name", 128)
        req["size"] = (
            _int(obj, "size", 16, max_associated_size) if "size" in obj
            else min(256, max_associated_size)
        )
    elif op == "region":  # level-0 rectangle scaled to out_w x out_h (IIIF, readers/region.py)
        for key in ("x", "y"):
            req[key] = _int(obj, key, 0, 1 << 31)
        for key in ("w", "h"):
            req[key] = _int(obj, key, 1, 1 << 31)
        for key in ("out_w", "out_h"):
            req[key] = _int(obj, key, 1, MAX_REGION_EDGE)
        req["format"] = obj.get("format", "jpeg")
        if not isinstance(req["format"], str) or req["format"] not in TILE_FORMATS:
            raise BadRequest(f"field 'format' must be one of {', '.join(TILE_FORMATS)}")
        req["quality"] = obj.get("quality", "default")
        if req["quality"] not in REGION_QUALITIES:
            raise BadRequest(f"field 'quality' must be one of {', '.join(REGION_QUALITIES)}")
        rotation = obj.get("rotation", 0)
        if (isinstance(rotation, bool) or not isinstance(rotation, (int, float))
                or not 0 <= rotation < 360):
            raise BadRequest("field 'rotation' must be a number of degrees in [0, 360)")
        req["rotation"] = rotation
        req["mirror"] = obj.get("mirror", False)
        if not isinstance(req["mirror"], bool):
            raise BadRequest("field 'mirror' must be a boolean")
    return req


def check_client_id(obj: dict[str, Any]) -> int | str | None:
    """The client's request id: an int or a short string (echoed back verbatim)."""
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        raise BadRequest("field 'id' must be an integer or a string")
    if isinstance(rid, str) and len(rid) > 256:
        raise MessageTooLarge("field 'id' is longer than 256 characters")
    return rid


def _string(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field '{key}' is required and must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"field '{key}' is longer than {limit} characters")
    return value


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{key}' is required and must be an integer")
    if not lo <= value <= hi:
        raise OutOfRange(f"field '{key}' must be between {lo} and {hi}")
    return value
