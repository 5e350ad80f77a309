"""The router's view of its shard: slides counted over two rotating windows."""

from __future__ import annotations

from router.shard import ShardStats


def test_counts_slides_over_two_windows_then_forgets() -> None:
    shard = ShardStats(window=10.0, max_slides=3)
    t0 = shard.rotated
    for slide in ("a", "a", "b"):
        shard.note(slide, t0 + 1)
    snap = shard.snapshot(t0 + 2)
    assert (snap["slides"], snap["requests"]) == (2, 3)
    assert snap["top"][0] == ["a", 2]
    shard.note("c", t0 + 11)  # a new window: the last one still counts
    snap = shard.snapshot(t0 + 12)
    assert (snap["slides"], snap["requests"]) == (3, 4)
    assert shard.snapshot(t0 + 25)["slides"] == 1  # only the window begun at t0 + 11
    assert shard.snapshot(t0 + 40)["slides"] == 0  # both windows are over
    shard.note("d", t0 + 45)  # long quiet: nothing old survives the rotation
    assert shard.snapshot(t0 + 46)["slides"] == 1


def test_memory_is_bounded_and_overflow_is_counted() -> None:
    shard = ShardStats(window=10.0, max_slides=2)
    t0 = shard.rotated
    for slide in ("a", "b", "c", "a"):
        shard.note(slide, t0 + 1)
    snap = shard.snapshot(t0 + 1)
    assert snap["slides"] == 2 and snap["uncounted"] == 1 and snap["requests"] == 3
