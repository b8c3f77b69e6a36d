"""What constrained decoding costs on the embedded engine: tokens/s with and without a grammar.

The engine itself (``backends.llamacpp.scheduler``, one request at a time) generates with the
same sampler settings in five plans: unconstrained text; text through a do-nothing logits
processor (the processor hook's own price); a JSON Schema (response_format) on the same prompt;
unconstrained text on the longer prompt that lists a tool; and a forced call of that tool. Runs
interleave (one of each plan per round) so that a busy machine slows all plans alike. Reported
per plan: generated tokens/s (prefill excluded), median and best of the rounds, and the time the
grammar's mask takes per token.

    python -m bench.constrained --rounds 6 --max-tokens 40
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gatewright.backends.llamacpp._internals import Model, llguidance_tokenizer
from gatewright.backends.llamacpp.chat_template import ChatTemplate
from gatewright.backends.llamacpp.constrain import GrammarConstraint, Guide, inline_json
from gatewright.backends.llamacpp.engine import ChoicePlan, Context, StopScanner
from gatewright.backends.llamacpp.scheduler import Scheduler
from gatewright.backends.llamacpp.shaping import TextShaper, ToolCallShaper
from gatewright.backends.llamacpp.toolcalls import CALL_SYNTAXES, call_grammar
from gatewright.backends.weights import resolve_model_path
from gatewright.core.events import Event
from gatewright.core.types import (
    CoreRequest,
    Message,
    ResponseFormat,
    Sampling,
    TextPart,
    ToolChoice,
    ToolSpec,
    Usage,
)
from gatewright.settings import Settings

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "city": {"type": "string", "maxLength": 30},
    },
    "required": ["name", "age", "hobbies", "city"],
    "additionalProperties": False,
}
TOOL = ToolSpec("save_person", "Store a person.", SCHEMA)
PROMPT = "Invent a person: name, age, hobbies and city. Answer in JSON."


@dataclass
class Sink:
    """One request for the scheduler; notes when its first token and its end came."""

    request: CoreRequest
    tokens: list[int]
    plan: ChoicePlan
    cancelled: bool = False
    usage: Usage = field(default_factory=Usage)
    events: list[Event] = field(default_factory=list)
    first: float = 0.0
    ended: float = 0.0
    taken_at: float = 0.0
    prefilled_at: float = 0.0
    finished_at: float = 0.0

    def plans(self, choice: int) -> ChoicePlan:
        return self.plan

    def emit(self, events: list[Event]) -> None:
        if not self.first:
            self.first = time.perf_counter()
        self.events.extend(events)

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            raise error
        self.ended = time.perf_counter()


class Once:
    """A source handing the scheduler one job, then asking it to stop."""

    def __init__(self, job: Sink) -> None:
        self.jobs: list[Sink | None] = [job, None]

    def take(self) -> Sink | None:
        return self.jobs.pop(0)

    def poll(self) -> tuple[bool, Sink | None]:
        return False, None


class TimedConstraint(GrammarConstraint):
    """The grammar constraint, timing its own mask step."""

    __slots__ = ("seconds",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seconds = 0.0

    def mask(self, input_ids: Any, logits: Any) -> Any:
        started = time.perf_counter()
        out = super().mask(input_ids, logits)
        self.seconds += time.perf_counter() - started
        return out


class NoMask:
    """A constraint that allows everything and never ends the output."""

    def mask(self, input_ids: Any, logits: Any) -> Any:
        return logits

    def consume(self, token: int) -> None:
        return None

    def done(self) -> bool:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    path = resolve_model_path("package:qwen2.5-coder-0.5b-instruct", Settings().model_cache)
    model = Model(str(path), n_ctx=2048, slots=1, n_threads=args.threads, n_batch=512)
    template = ChatTemplate(model.metadata["tokenizer.chat_template"], "", "<|im_end|>")
    guide = Guide(lambda: llguidance_tokenizer(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        started = time.perf_counter()
        guide.tokenizer  # noqa: B018 - built once per model, as the backend does on first use
        print(f"llguidance tokenizer built in {time.perf_counter() - started:.2f} s (once per model)")

    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens)
    messages = (Message("user", (TextPart(PROMPT),)),)
    text_request = CoreRequest(model="m", messages=messages, sampling=sampling)
    json_request = CoreRequest(
        model="m", messages=messages, sampling=sampling, response_format=ResponseFormat("json_schema", SCHEMA)
    )
    tool_request = CoreRequest(
        model="m", messages=messages, sampling=sampling, tools=(TOOL,), tool_choice=ToolChoice("required")
    )
    syntax = CALL_SYNTAXES["hermes"]
    started = time.perf_counter()
    json_lark = "start: " + inline_json(SCHEMA)
    tool_grammar = call_grammar(tool_request, syntax, guide.is_special(syntax.open_tag), None)
    guide.compile(json_lark)
    guide.compile(tool_grammar.lark)
    print(f"two grammars compiled in {1000 * (time.perf_counter() - started):.1f} ms")
    n_vocab = model.n_vocab

    plans: dict[str, tuple[CoreRequest, Callable[[], ChoicePlan]]] = {
        "text": (text_request, lambda: ChoicePlan(TextShaper(0))),
        # The price of a logits processor alone (llama-cpp-python copies the logits out and back).
        "text+noop": (text_request, lambda: ChoicePlan(TextShaper(0), NoMask())),
        "json_schema": (
            json_request,
            lambda: ChoicePlan(TextShaper(0), TimedConstraint(guide.compile(json_lark), n_vocab), ()),
        ),
        # The tool prompt is longer (the template lists the tools): its unconstrained baseline.
        "text@tools": (tool_request, lambda: ChoicePlan(TextShaper(0))),
        "tool_call": (
            tool_request,
            lambda: ChoicePlan(
                ToolCallShaper(0, tool_grammar.openers, False, StopScanner(())),
                TimedConstraint(guide.compile(tool_grammar.lark), n_vocab),
                (),
            ),
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in plans}
    mask_ms: dict[str, list[float]] = {name: [] for name in plans}
    for round_ in range(args.rounds):
        for name, (request, plan_for) in plans.items():
            plan = plan_for()
            seeded = replace(request, sampling=replace(request.sampling, seed=1000 + round_))
            sink = Sink(seeded, model.tokenize(template.render(request)), plan)
            Scheduler(Context(model), 1, 64, 512, 512).run(Once(sink))
            seconds = sink.ended - sink.first  # generation after the first token
            produced = sink.usage.output_tokens - 1
            rates[name].append(produced / seconds)
            if isinstance(plan.constraint, TimedConstraint):
                mask_ms[name].append(1000 * plan.constraint.seconds / max(produced, 1))
            print(f"round {round_} {name:12} {produced:3} tokens in {seconds:5.2f} s = {produced / seconds:5.1f} tok/s")

    # Best of the rounds too: on a shared machine the fastest run is the one least disturbed.
    # Each plan is compared with unconstrained text on its own prompt.
    baseline = {"text+noop": "text", "json_schema": "text", "tool_call": "text@tools"}
    print("\nplan         baseline    tok/s median  vs base   tok/s best  vs base  mask ms/token")
    for name in plans:
        base = baseline.get(name, name)
        rate, best = statistics.median(rates[name]), max(rates[name])
        versus = 100 * rate / statistics.median(rates[base])
        versus_best = 100 * best / max(rates[base])
        per_token = f"{statistics.median(mask_ms[name]):.2f}" if mask_ms[name] else "-"
        print(
            f"{name:11}  {base:10}  {rate:12.1f}  {versus:6.0f} %  {best:11.1f}  {versus_best:5.0f} %  {per_token:>13}"
        )


if __name__ == "__main__":
    main()
