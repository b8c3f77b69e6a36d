"""A serving process settles its heap once the gateway is up (``app.settle_heap``); an app built
inside another program (tests, an embedding host) leaves the collector as it found it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewright.app import YOUNG_GC_THRESHOLD, create_app
from gatewright.settings import Settings
from tests.support.app import FAKE_CATALOG


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def _start_and_stop(serving: bool, data_dir: Path) -> tuple[int, tuple[int, int, int]]:
    settings = Settings(platform=False, catalog=FAKE_CATALOG, data_dir=data_dir, log_level="warning")
    app = create_app(settings, serving=serving)
    async with app.router.lifespan_context(app):
        return gc.get_freeze_count(), gc.get_threshold()


@pytest.mark.usefixtures("collector")
def test_a_serving_app_freezes_start_up_and_raises_the_young_threshold(tmp_path: Path) -> None:
    frozen, threshold = asyncio.run(_start_and_stop(True, tmp_path))
    assert frozen > 10_000  # modules, the catalog, the app: everything start-up made
    assert threshold[0] == YOUNG_GC_THRESHOLD


@pytest.mark.usefixtures("collector")
def test_an_app_built_inside_another_program_leaves_the_collector_alone(tmp_path: Path) -> None:
    before = gc.get_threshold()
    frozen, threshold = asyncio.run(_start_and_stop(False, tmp_path))
    assert frozen == 0
    assert threshold == before
