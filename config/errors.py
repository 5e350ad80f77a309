"""One exception root with stable error codes that the wire protocol reports.

Every failure a client can see maps to one short code; the code is part of the
public contract (README), the message is for humans.
"""

from __future__ import annotations


class TileRouterError(Exception):
    """Root of every tilerouter error; ``code`` travels over the wire."""

    code = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)

    @property
    def message(self) -> str:
        return str(self)

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(TileRouterError):
    """The request is malformed: bad JSON, wrong or missing fields."""

    code = "bad_request"


class UnknownOp(BadRequest):
    code = "unknown_op"


class MessageTooLarge(BadRequest):
    code = "too_large"


class Forbidden(TileRouterError):
    """The slide path leaves the slide root, or the caller may not read it."""

    code = "forbidden"


class Unauthorized(TileRouterError):
    code = "unauthorized"


class SlideNotFound(TileRouterError):
    code = "not_found"


class BadSlide(TileRouterError):
    """The file exists but is not a readable slide (unknown format, corrupt, truncated)."""

    code = "bad_slide"


class OutOfRange(TileRouterError):
    """Level, column or row outside the slide's pyramid."""

    code = "out_of_range"


class Busy(TileRouterError):
    """A bound was hit (in-flight per connection, router queue): try again later."""

    code = "busy"


class RateLimited(Busy):
    """The connection sends faster than ``max_requests_per_second``."""

    code = "rate_limited"


class Timeout(TileRouterError):
    code = "timeout"


class Unavailable(TileRouterError):
    """The router (or every worker) cannot be reached right now."""

    code = "unavailable"


class WorkerLost(TileRouterError):
    """The worker died while handling the request and a retry also failed."""

    code = "worker_lost"


class Quarantined(TileRouterError):
    """The slide crashed workers repeatedly and is refused until restart."""

    code = "quarantined"


class ProtocolError(TileRouterError):
    """A ZeroMQ message that does not follow router/protocol.py."""

    code = "protocol"


class ConfigError(TileRouterError):
    code = "config"


ERROR_CODES: dict[str, type[TileRouterError]] = {
    cls.code: cls
    for cls in (
        TileRouterError, BadRequest, UnknownOp, MessageTooLarge, Forbidden, Unauthorized,
        SlideNotFound, BadSlide, OutOfRange, Busy, RateLimited, Timeout, Unavailable, WorkerLost,
        Quarantined, ProtocolError, ConfigError,
    )
}


def error_from_wire(err: dict) -> TileRouterError:
    """Rebuild the exception a remote process reported."""
    cls = ERROR_CODES.get(str(err.get("code")), TileRouterError)
    return cls(str(err.get("message", "")))
