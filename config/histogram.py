"""Latency histograms as plain ints, cheap enough for every tile on the hot path.

prometheus_client's ``Histogram.observe`` takes a lock and walks its buckets per call;
a gateway answering a hot tile in tens of microseconds would pay a visible share of its
CPU for that. These histograms are a list of ints and a float, filled with one bisect,
and turned into Prometheus histograms only when scraped (``wsgateway.metrics``,
``router.metrics``). Workers send theirs to the router as plain lists in their
heartbeat/REPLY headers (``to_wire``/``from_wire``), so the bucket bounds are one
shared constant: every process must agree on them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# 1 ms to 10 s in 1-2-5 steps (upper bounds, seconds); +Inf is implicit
BUCKETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                              1.0, 2.0, 5.0, 10.0)


class Histogram:
    """Counts per bucket (not cumulative; the last slot is +Inf) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "<=")
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus exposes them, +Inf last."""
        out, total = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out

    def to_wire(self) -> dict[str, Any]:
        return {"b": list(self.counts), "s": round(self.sum, 6)}

    @classmethod
    def from_wire(cls, obj: Any) -> Histogram | None:
        """A histogram another process sent, or None when it is malformed (a peer with
        other bucket bounds, or garbage): a bad report must not break the scrape."""
        if not isinstance(obj, dict):
            return None
        counts, total = obj.get("b"), obj.get("s")
        if (not isinstance(counts, list) or len(counts) != len(BUCKETS) + 1
                or not all(isinstance(n, int) and n >= 0 for n in counts)
                or not isinstance(total, (int, float))):
            return None
        hist = cls()
        hist.counts = list(counts)
        hist.sum = float(total)
        return hist
