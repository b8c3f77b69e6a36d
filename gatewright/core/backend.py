"""The contract between ``core`` and every engine or provider in ``backends``.

Backends are built by the application from catalog deployments and handed to ``core`` as objects
satisfying this protocol, so ``core`` never imports a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, EmbeddingRequest, Embeddings, Usage


@dataclass(slots=True)
class CallContext:
    """Per-call state a backend shares with the pipeline.

    ``usage`` is a live meter: the backend keeps it current while it generates, so a stream the
    client abandons is still billed for the tokens actually produced.
    """

    request_id: str
    owner: str = ""  # fairness key: who is asking (the API key prefix)
    usage: Usage = field(default_factory=Usage)
    # The prompt's size as the pipeline already counted it (``count_prompt_tokens``): a backend
    # streams from that preparation instead of counting again.
    prompt_tokens: int | None = None
    # The answer came whole, not streamed (an upstream asked for a whole answer): its first token
    # came with its last, so neither the time to it nor the decoding speed can be timed.
    whole: bool = False


class Backend(Protocol):
    deployment: Deployment
    entry: ModelEntry

    def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        """Generate: yields events, ends with ``ChoiceEnd`` per choice and one ``UsageReport``.

        Raises ``core.errors`` exceptions (upstream failures mapped) before or while yielding.
        Closing the iterator early must stop the generation.
        """
        ...

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        """Tokens the prompt occupies (exact where the backend has the tokenizer, else estimated)."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests being served now: the measure least-busy routing uses."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """A backend that can also (or only) embed: the embedded embedding model, OpenAI-compatible
    upstreams. The pipeline checks the model's ``type`` before it calls either side."""

    deployment: Deployment
    entry: ModelEntry

    async def embed(self, request: EmbeddingRequest, ctx: CallContext) -> Embeddings:
        """One vector per input, in input order; ``usage.input_tokens`` is what the model read.

        Inputs longer than ``request.truncate`` tokens (when set) are cut to it. Raises
        ``core.errors`` exceptions (upstream failures mapped)."""
        ...

    async def count_input_tokens(self, request: EmbeddingRequest) -> tuple[list[int], bool]:
        """Tokens of each input before any truncation, and whether the counts are exact (the
        backend has the model's tokenizer) or estimated."""
        ...


class BackendFactory(Protocol):
    def __call__(self, deployment: Deployment, entry: ModelEntry) -> Backend: ...
