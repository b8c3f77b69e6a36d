"""A real mock-upstream process for the benchmark-harness tests (no model needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import procs


@pytest.fixture(scope="module")
def mock() -> Iterator[procs.Service]:
    service = procs.start_mock(tokens=16)
    try:
        yield service
    finally:
        service.stop()
