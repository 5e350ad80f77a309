"""The ops a request may name, and the cheap check inner hops make of relayed requests.

The gateway is the edge: it validates every client request once
(``wsgateway.requests.check_request``) into a canonical form with only known fields.
The router and the workers trust that, but still check what they read
(``check_relayed``); a worker's real defence is its slide store, which confines every
id it opens.
"""

from __future__ import annotations

from typing import Any

from config.errors import BadRequest, UnknownOp

OPS = ("tile", "info", "list", "associated", "region")
MAX_LIST_PAGE = 10000  # slides in one list reply


# the fields each op's handler reads, with their JSON types (after the gateway's check_request)
_RELAYED_FIELDS: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "list": (),
    "info": (("slide", str),),
    "tile": (("slide", str), ("level", int), ("col", int), ("row", int)),
    "associated": (("slide", str), ("name", str), ("size", int)),
    "region": (("slide", str), ("x", int), ("y", int), ("w", int), ("h", int),
               ("out_w", int), ("out_h", int), ("format", str), ("quality", str),
               ("rotation", (int, float)), ("mirror", bool)),
}


def check_relayed(req: dict[str, Any]) -> dict[str, Any]:
    """The cheap check an inner hop (router, worker) makes of a request a gateway already
    validated: a known op and the fields its handler reads, of the right JSON types.

    Bounds and id syntax were the gateway's job; the store confines ids again when it
    opens them. A request failing this came from a buggy or hostile peer: bad_request."""
    fields = _RELAYED_FIELDS.get(req.get("op"))  # type: ignore[arg-type]
    if fields is None:
        raise UnknownOp(f"unknown op {str(req.get('op'))[:32]!r}")
    for key, kind in fields:
        value = req.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise BadRequest(f"relayed request: field {key!r} missing or mistyped")
    return req
