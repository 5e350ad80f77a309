"""Prefetch candidates: neighbours of served tiles, newest first, never twice, bounded."""

from __future__ import annotations

from router.prefetch import Prefetcher


def _tile(col: int, row: int, level: int = 9) -> dict:
    return {"op": "tile", "slide": "s.tiff", "level": level, "col": col, "row": row,
            "format": None}


def _drain(p: Prefetcher, worker: bytes) -> list[tuple[int, int]]:
    out = []
    for _ in range(100):
        req = p.next_for(worker)
        if req is None:
            return out
        out.append((req["col"], req["row"]))
    raise AssertionError("candidate list did not run out")


def test_neighbours_of_a_served_tile_are_offered_once() -> None:
    p = Prefetcher()
    p.note(b"w1", _tile(5, 5))
    assert sorted(_drain(p, b"w1")) == [(4, 5), (5, 4), (5, 6), (6, 5)]
    assert p.next_for(b"w1") is None
    p.note(b"w1", _tile(5, 5))  # same tile again: neighbours already prefetched
    assert _drain(p, b"w1") == []


def test_requested_tiles_are_not_prefetched_and_edges_are_clipped() -> None:
    p = Prefetcher()
    p.note(b"w1", _tile(1, 0))
    p.note(b"w1", _tile(0, 0))  # (0, 0) itself was requested: not a candidate any more
    got = _drain(p, b"w1")
    assert (0, 0) not in got and all(c >= 0 and r >= 0 for c, r in got)
    assert len(got) == len(set(got))


def test_candidates_are_per_worker_bounded_and_forgotten() -> None:
    p = Prefetcher(per_worker=6)
    for col in range(0, 40, 3):
        p.note(b"w1", _tile(col, 10))
    assert p.next_for(b"w2") is None
    got = _drain(p, b"w1")
    assert len(got) <= 6 and (40, 10) in got  # bounded, newest kept
    p.note(b"w1", _tile(50, 50))
    p.forget(b"w1")
    assert p.next_for(b"w1") is None
