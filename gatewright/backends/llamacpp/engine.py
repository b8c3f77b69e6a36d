"""What happens to one choice's tokens: sampling from its logits row (llama.cpp's sampler chain
after the logprob recorder and the grammar mask), stop sequences, logprobs, shaping into events and
the live usage meter. The scheduler (``scheduler``) decides when each choice's row is computed.
Nothing here touches the event loop except through a job.
"""

from __future__ import annotations

import codecs
import ctypes
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gatewright.backends.llamacpp._internals import Model, Sampler
from gatewright.backends.llamacpp.shaping import Shaper
from gatewright.core.events import ChoiceEnd, Event
from gatewright.core.types import CoreRequest, FinishReason, TokenLogprob, TopLogprob, Usage

if TYPE_CHECKING:
    import numpy.typing as npt


class Constraint(Protocol):
    """Constrained decoding for one choice (grammar masks; see ``constrain``)."""

    def mask(self, input_ids: Any, logits: npt.NDArray[np.single]) -> npt.NDArray[np.single]: ...

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


class Choice:
    """One choice being generated: its sampler, and what becomes of each token it draws (stop
    sequences, logprobs, constraint, shaping, the live usage meter). The scheduler evaluates and
    hands it logits rows; ``take`` says when the choice is over."""

    def __init__(
        self, job: JobSink, request: CoreRequest, choice: int, prompt: int, seed: int, plan: ChoicePlan, ctx: Context
    ) -> None:
        sampling = request.sampling
        self.job = job
        self.choice = choice
        self.plan = plan
        self.ctx = ctx
        self.budget = min(sampling.max_tokens or ctx.n_ctx, ctx.n_ctx - prompt)
        self.recorder = LogprobRecorder(request.top_logprobs, ctx.piece) if request.logprobs else None
        self.sampler = Sampler(
            ctx.model.n_vocab,
            temperature=1.0 if sampling.temperature is None else sampling.temperature,
            top_k=sampling.top_k or 0,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            presence_penalty=sampling.presence_penalty or 0.0,
            seed=seed & 0xFFFFFFFF,
        )
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = StopScanner(sampling.stop if plan.stops is None else plan.stops)
        self._waiting: deque[tuple[TokenLogprob, int]] = deque()  # logprobs whose text is held back
        self._decoded = self._emitted = self.produced = 0

    def sample(self, row: int) -> int:
        """Draw the next token from batch row ``row`` of the last decode."""
        logits = self.ctx.model.logits(row)
        if self.recorder is not None:
            self.recorder(None, logits)
        if self.plan.constraint is not None:
            self.plan.constraint.mask(None, logits)
        return self.sampler.sample(self.ctx.model, row)

    def take(self, token: int) -> bool:
        """Account for a drawn token and emit what it adds; True when the choice has ended."""
        if self.ctx.model.is_eog(token):
            self.finish("stop", None)
            return True
        self.produced += 1
        self.job.usage.output_tokens += 1
        plan = self.plan
        if plan.constraint is not None:
            plan.constraint.consume(token)
        piece = self.ctx.piece(token)
        text = self._decoder.decode(piece)
        self._decoded += len(text)
        if self.recorder is not None:
            self._waiting.append((self.recorder.entry(token, piece), self._decoded))
        out, matched = self._stops.push(text)
        self._emitted += len(out)
        self.job.emit(plan.shaper.feed(out, _release(self._waiting, self._emitted, self.recorder is not None)))
        matched = matched or plan.shaper.stopped_by
        if matched is not None or (plan.constraint is not None and plan.constraint.done()):
            self.finish("stop", matched)
            return True
        if self.produced >= self.budget:
            self.finish("length", None)
            return True
        return False

    def finish(self, reason: FinishReason, matched: str | None) -> None:
        plan = self.plan
        if matched is None:
            tail = self._stops.flush() + self._decoder.decode(b"", final=True)
            if tail or self._waiting:
                wanted = self.recorder is not None
                self.job.emit(plan.shaper.feed(tail, _release(self._waiting, self._emitted + len(tail), wanted)))
        events, reason = plan.shaper.finish(reason)
        self.job.emit([*events, ChoiceEnd(self.choice, reason, matched)])

    def close(self) -> None:
        self.sampler.close()


class Context:
    """The loaded model and what every choice shares: token pieces (cached) and the window size."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.n_ctx = model.n_ctx
        self._pieces: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (cached; llama_cpp's own helper pads them with NULs)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.model.piece(token, self._buffer)
        return piece


def _release(waiting: deque[tuple[TokenLogprob, int]], emitted: int, wanted: bool) -> tuple[TokenLogprob, ...] | None:
    if not wanted:
        return None
    out = []
    while waiting and waiting[0][1] <= emitted:
        out.append(waiting.popleft()[0])
    return tuple(out)
