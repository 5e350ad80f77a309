"""RangeMirror: fetched ranges tracked exactly, batches coalesced, the disk bound kept.

The fetch function here serves slices of an in-memory object: the interval logic is
what is under test (tests/integration/test_remote_stores.py reads real servers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from readers.range_mirror import MAX_GAP, READ_AHEAD, RangeMirror

DATA = os.urandom(3 * READ_AHEAD + 12345)


class Source:
    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __call__(self, starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        self.batches.append(list(zip(starts, ends, strict=True)))
        return [DATA[s:e] for s, e in zip(starts, ends, strict=True)]


@pytest.fixture
def mirror(tmp_path: Path) -> RangeMirror:
    m = RangeMirror(len(DATA), Source(), str(tmp_path), ".tiff")
    yield m
    m.close()
    assert not os.path.exists(m.path)


def test_fetches_only_what_is_missing_and_reads_back_exactly(mirror: RangeMirror) -> None:
    source = mirror._fetch  # the Source above
    mirror.ensure([(100, 200)])
    mirror.ensure([(150, 180)])  # already there: no request
    assert source.batches == [[(100, 200)]]
    mirror.ensure([(50, 250)])
    assert source.batches[-1] == [(50, 250)]  # two gaps 100 bytes apart: one request
    assert mirror.missing(50, 250) == []
    assert mirror.pread(200, 50) == DATA[50:250]
    assert mirror.pread(10, 0) == b"\0" * 10  # never fetched: a hole


def test_ranges_close_together_are_one_request(mirror: RangeMirror) -> None:
    far = 10 * MAX_GAP
    mirror.ensure([(0, 10), (10 + MAX_GAP // 2, 20 + MAX_GAP // 2), (far, far + 5)])
    assert mirror._fetch.batches == [[(0, 20 + MAX_GAP // 2), (far, far + 5)]]
    assert mirror.missing(0, 20 + MAX_GAP // 2) == []


def test_reads_through_the_file_view_fetch_with_read_ahead(mirror: RangeMirror) -> None:
    fh = mirror.open_reader()
    fh.seek(1000)
    assert fh.read(10) == DATA[1000:1010]
    assert mirror._fetch.batches == [[(1000, 1000 + READ_AHEAD)]]
    fh.seek(-5, os.SEEK_END)
    assert fh.read(100) == DATA[-5:]  # clipped at the end of the object
    assert fh.read(1) == b""


def test_over_its_budget_it_keeps_only_the_pinned_ranges(tmp_path: Path) -> None:
    source = Source()
    m = RangeMirror(len(DATA), source, str(tmp_path), max_bytes=3000)
    try:
        m.ensure([(0, 1000)])
        m.pin()
        m.ensure([(200_000, 201_000)])
        m.ensure([(300_000, 301_500)])  # 3500 bytes would be held: reset first
        assert m.resets == 1
        assert source.batches[-1] == [(0, 1000), (300_000, 301_500)]
        assert m.missing(200_000, 201_000) == [(200_000, 201_000)]
        assert m.pread(1000, 0) == DATA[:1000]
        assert m.pread(1500, 300_000) == DATA[300_000:301_500]
        assert m.pread(10, 200_000) == b"\0" * 10
    finally:
        m.close()


def test_a_short_read_is_an_error_and_marks_nothing(tmp_path: Path) -> None:
    m = RangeMirror(len(DATA), lambda s, e: [b"x"], str(tmp_path))
    try:
        with pytest.raises(OSError, match="returned 1 of 100 bytes"):
            m.ensure([(0, 100)])
        assert m.missing(0, 100) == [(0, 100)]
    finally:
        m.close()
