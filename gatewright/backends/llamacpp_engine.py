"""The thread that owns one ``llama_cpp.Llama``: prompt prefill with prefix reuse, token
generation, stop sequences, logprobs. Nothing here touches the event loop except through a job.

Prefix reuse is made deterministic. llama.cpp's quantized matrix products work on the prompt's
tokens in groups of rows (4 on x86 with repacked Q4_K weights) and on the rows left over with
another kernel, whose rounding differs; so a token's hidden state depends on where the chunk it
was evaluated in began. Measured here: chunkings whose chunk starts are multiples of 4 give
bit-identical logits, others do not. The prefill therefore reuses the previous sequence only up to
a multiple of ``granularity`` (16, a multiple of every group size in use), evaluates from there in
chunks of ``n_batch`` whose sizes are multiples of it, and the prompt's last token alone. A prompt's
logits then come out the same whether or not part of it was cached, and a seed gives the same text
either way. Chunks stay large: 64-token chunks made prompt processing ~2.7× slower than 512.
"""

from __future__ import annotations

import codecs
import ctypes
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from llama_cpp import Llama, LogitsProcessorList, llama_token_to_piece, llama_vocab_is_eog

from gatewright.backends.cache_pins import Pin
from gatewright.backends.prefix_cache import PrefixCache, common_prefix
from gatewright.backends.shaping import Shaper
from gatewright.core.events import ChoiceEnd, Event
from gatewright.core.types import CoreRequest, FinishReason, TokenLogprob, TopLogprob, Usage

if TYPE_CHECKING:
    import numpy.typing as npt


class Constraint(Protocol):
    """Constrained decoding for one choice (grammar masks; see ``constrain``)."""

    def mask(self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> npt.NDArray[np.single]: ...

    def consume(self, token: int) -> None: ...

    def done(self) -> bool: ...


class JobSink(Protocol):
    cancelled: bool
    usage: Usage

    def emit(self, events: list[Event]) -> None: ...


@dataclass(slots=True)
class ChoicePlan:
    """What one choice needs besides the prompt: how to read and constrain the output."""

    shaper: Shaper
    constraint: Constraint | None = None
    # Stop sequences the engine cuts at; None means the request's. Constrained plans pass () so a
    # stop string can never cut a JSON value short (their shaper may apply them to free text).
    stops: tuple[str, ...] | None = None


class StopScanner:
    """Cuts generated text at the first stop sequence, holding back possible partial matches."""

    __slots__ = ("_pending", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._pending = ""

    def push(self, text: str) -> tuple[str, str | None]:
        if not self.stops:
            return text, None
        buffer = self._pending + text
        hit: tuple[int, str] | None = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (hit is None or at < hit[0]):
                hit = (at, stop)
        if hit is not None:
            self._pending = ""
            return buffer[: hit[0]], hit[1]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if stop.startswith(buffer[-size:]):
                    keep = size
                    break
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        pending, self._pending = self._pending, ""
        return pending


class LogprobRecorder:
    """A logits processor that notes the model's own distribution before any sampling step."""

    __slots__ = ("_row", "piece", "top_n")

    def __init__(self, top_n: int, piece: Callable[[int], bytes]) -> None:
        self.top_n = top_n
        self.piece = piece
        self._row: npt.NDArray[np.single] | None = None

    def __call__(self, input_ids: Any, logits: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        top = float(logits.max())
        self._row = logits - (top + np.log(np.exp(logits - top).sum()))
        return logits

    def entry(self, token: int, piece: bytes) -> TokenLogprob:
        row = self._row
        assert row is not None
        top: tuple[TopLogprob, ...] = ()
        if self.top_n:
            best = np.argpartition(-row, self.top_n)[: self.top_n]
            best = best[np.argsort(-row[best])]
            top = tuple(_top(int(i), float(row[i]), self.piece(int(i))) for i in best)
        return TokenLogprob(piece.decode("utf-8", "replace"), float(row[token]), tuple(piece), top)


def _top(token: int, logprob: float, piece: bytes) -> TopLogprob:
    return TopLogprob(piece.decode("utf-8", "replace"), logprob, tuple(piece))


class Engine:
    """Owns the model; every method runs on the backend's worker thread."""

    def __init__(self, llm: Llama, granularity: int, cache: PrefixCache | None = None) -> None:
        self.llm = llm
        self.granularity = granularity
        self.chunk = max(granularity, llm.n_batch // granularity * granularity)
        self.cache = cache
        self.vocab = llm._model.vocab
        self.n_ctx = llm.n_ctx()
        self._pieces: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (cached; llama_cpp's own helper pads them with NULs)."""
        piece = self._pieces.get(token)
        if piece is None:
            size = llama_token_to_piece(self.vocab, token, self._buffer, len(self._buffer), 0, False)
            piece = self._pieces[token] = self._buffer.raw[: max(size, 0)]
        return piece

    def _restore_longer(self, head: Sequence[int], live: int) -> int:
        """Swap in a cached snapshot when it shares more of ``head`` than the live context does;
        returns the prefix length now shared."""
        if self.cache is None:
            return live
        snapshot, shared = self.cache.best(head)
        step = self.granularity
        if snapshot is None or shared // step <= live // step:
            return live
        llm = self.llm
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        if not self.cache.restore(llm.ctx, snapshot):
            llm.n_tokens = 0
            return 0
        llm.input_ids[: len(snapshot.tokens)] = snapshot.tokens
        llm.n_tokens = len(snapshot.tokens)
        return shared

    def prefill(self, tokens: Sequence[int], job: JobSink, pins: Sequence[Pin] = ()) -> int:
        """Evaluate the prompt, reusing what the context (or a snapshot) already holds of it, down
        to a multiple of the granularity; returns the number of prompt tokens reused. The prefixes
        in ``pins`` (cache_control breakpoints, aligned down) are snapshotted and pinned on the way."""
        llm, step, cache = self.llm, self.granularity, self.cache
        last = len(tokens) - 1
        head = tokens[:last]
        live = common_prefix(llm.input_ids[: llm.n_tokens], head)
        reuse = self._restore_longer(head, live) // step * step
        llm.n_tokens = reuse
        position = reuse
        boundary = last // step * step  # whole groups end here; the rest is leftover rows anyway
        stops = {min(p.tokens // step * step, boundary): p.ttl for p in pins if p.tokens // step * step > 0}
        if cache is not None:  # already pinned and held (restored, or live): pin again for its TTL
            for at, ttl in stops.items():
                if at <= reuse and cache.pinned(head[:at]):
                    cache.pin(llm.ctx, head[:at], ttl)
        while position < boundary:
            if job.cancelled:
                return reuse
            end = min([position + self.chunk, boundary, *(at for at in stops if at > position)])
            llm.eval(tokens[position:end])
            position = end
            if cache is not None and position in stops:
                cache.pin(llm.ctx, head[:position], stops[position])  # the context holds exactly this
        if boundary > reuse and cache is not None and cache.wants(head[:boundary]):
            cache.save(llm.ctx, head[:boundary])  # the context holds exactly this prefix now
        if boundary < last:
            llm.eval(tokens[boundary:last])
        llm.eval(tokens[last:])
        return reuse

    def generate(
        self, job: JobSink, request: CoreRequest, choice: int, tokens: Sequence[int], seed: int, plan: ChoicePlan
    ) -> None:
        sampling = request.sampling
        budget = min(sampling.max_tokens or self.n_ctx, self.n_ctx - len(tokens))
        recorder = LogprobRecorder(request.top_logprobs, self.piece) if request.logprobs else None
        processors: list[Any] = []
        if recorder is not None:
            processors.append(recorder)
        if plan.constraint is not None:
            processors.append(plan.constraint.mask)
        self.llm.set_seed(seed & 0xFFFFFFFF)
        temperature = 1.0 if sampling.temperature is None else sampling.temperature
        stream = self.llm.generate(
            tokens,
            top_k=sampling.top_k or 0,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            min_p=0.0,
            typical_p=1.0,
            temp=temperature,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            presence_penalty=sampling.presence_penalty or 0.0,
            logits_processor=LogitsProcessorList(processors) if processors else None,
        )
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = StopScanner(sampling.stop if plan.stops is None else plan.stops)
        waiting: deque[tuple[TokenLogprob, int]] = deque()  # logprobs whose text is held back
        decoded = emitted = produced = 0
        finish: FinishReason | None = "length"
        matched: str | None = None
        try:
            for token in stream:
                if job.cancelled:
                    finish = None
                    break
                if llama_vocab_is_eog(self.vocab, token):
                    finish = "stop"
                    break
                produced += 1
                job.usage.output_tokens += 1
                if plan.constraint is not None:
                    plan.constraint.consume(token)
                piece = self.piece(token)
                text = decoder.decode(piece)
                decoded += len(text)
                if recorder is not None:
                    waiting.append((recorder.entry(token, piece), decoded))
                out, matched = stops.push(text)
                emitted += len(out)
                job.emit(plan.shaper.feed(out, _release(waiting, emitted, recorder is not None)))
                matched = matched or plan.shaper.stopped_by
                if matched is not None:
                    finish = "stop"
                    break
                if plan.constraint is not None and plan.constraint.done():
                    finish = "stop"
                    break
                if produced >= budget:
                    break
        finally:
            stream.close()
        if finish is None:
            return
        if matched is None:
            tail = stops.flush() + decoder.decode(b"", final=True)
            if tail or waiting:
                job.emit(plan.shaper.feed(tail, _release(waiting, emitted + len(tail), recorder is not None)))
        events, reason = plan.shaper.finish(finish)
        job.emit([*events, ChoiceEnd(choice, reason, matched)])


def _release(waiting: deque[tuple[TokenLogprob, int]], emitted: int, wanted: bool) -> tuple[TokenLogprob, ...] | None:
    if not wanted:
        return None
    out = []
    while waiting and waiting[0][1] <= emitted:
        out.append(waiting.popleft()[0])
    return tuple(out)
