"""Fault-test fixtures: ``netns``, a network namespace linked to the host (tests/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import NetNs, make_netns


@pytest.fixture
def netns() -> Iterator[NetNs]:
    yield from make_netns()
