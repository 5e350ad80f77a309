"""What a worker reports about its own work, beyond routing state: cumulative render
latency and cache sizes (the ``m`` field of its REGISTER/HEARTBEAT/REPLY headers).

Kept apart from ``WorkerState.update`` so the router's hot reply path parses nothing
new unless the worker sent it: a worker includes ``m`` at most every
``workers.worker.METRICS_EVERY`` seconds, not on every reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.histogram import Histogram


@dataclass
class WorkerMetrics:
    render: Histogram = field(default_factory=Histogram)  # seconds per request handled
    tile_cache_bytes: int = 0
    decoded_cache_bytes: int = 0

    def update(self, metrics: Any) -> None:
        """Take a worker's ``m`` report; anything malformed is ignored, field by field."""
        if not isinstance(metrics, dict):
            return
        render = Histogram.from_wire(metrics.get("render"))
        if render is not None:
            self.render = render
        for name in ("tile_cache_bytes", "decoded_cache_bytes"):
            value = metrics.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, name, value)

    def to_stats(self) -> dict[str, Any]:
        return {"render_seconds": self.render.to_wire()}
