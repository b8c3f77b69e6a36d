"""The real model for the in-process prefix-cache tests, loaded once per module (its sequences'
cells are left behind by one module's schedulers, never seen by another's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewright.backends.llamacpp._internals import Model
from gatewright.backends.weights import assemble


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    path = assemble("qwen2.5-coder-0.5b-instruct", Path.home() / ".cache" / "gatewright" / "models")
    loaded = Model(str(path), n_ctx=1024, slots=2, n_threads=2, n_batch=512)
    yield loaded
    loaded.close()
