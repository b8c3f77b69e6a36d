"""Task results are stored as neutral outcomes (``store.tasks``) and read back as they were: the
choice, usage, cost and the error with its core class, status, code and retry-after; and they
render to the same task-API items before and after the round trip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson

from gatewright.api.tasks.codec import render, spec_of
from gatewright.api.tasks.handlers import Batch
from gatewright.api.tasks.stream import StreamAborted
from gatewright.core import errors as e
from gatewright.core.jobs import Job, Outcome
from gatewright.core.types import Choice, Cost, ToolCall, Usage
from gatewright.store.tasks import UNREADABLE, outcome_json, outcome_of, task_record

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tasks"
UUID = "a770f077-f413-47de-9dac-be0b26a35da6"
TASK = {
    "taskType": "textInference",
    "taskUUID": UUID,
    "model": "fake",
    "messages": [{"role": "user", "content": "hi"}],
    "includeCost": True,
    "includeUsage": True,
}


def _round_trip(outcome: Outcome) -> Outcome:
    # Through JSON text, as the tasks table's JSON column keeps it.
    return outcome_of(orjson.loads(orjson.dumps(outcome_json(outcome))), outcome.index)


def test_a_success_comes_back_whole_and_renders_the_same() -> None:
    choice = Choice(0, text="Hi!", reasoning="Think.", finish_reason="tool_calls")
    choice.tool_calls.append(ToolCall("call_1", "get_weather", '{"city": "Tokyo"}'))
    usage = Usage(input_tokens=12, output_tokens=7, cached_tokens=4, reasoning_tokens=2, estimated=True)
    outcome = Outcome(1, 42, choice, usage, Cost(90, 0.000045))
    back = _round_trip(outcome)
    assert back == outcome
    spec = spec_of(TASK)
    assert render(spec, back) == render(spec, outcome)


def test_errors_keep_their_core_class_status_code_and_retry_after() -> None:
    limited = _round_trip(Outcome(0, 1, error=e.RateLimited("slow down", retry_after=2.5, code="rate_limit_requests")))
    assert isinstance(limited.error, e.RateLimited)
    assert (limited.error.status, limited.error.code, limited.error.retry_after) == (429, "rate_limit_requests", 2.5)
    upstream = _round_trip(Outcome(0, 1, error=e.UpstreamTimeout("too slow", param="model", upstream_status=504)))
    assert isinstance(upstream.error, e.UpstreamTimeout) and upstream.error.param == "model"
    assert (upstream.error.upstream_status, upstream.error.retry_after) == (504, None)
    # A dialect's own error class is stored as its nearest core class, its code kept.
    aborted = _round_trip(Outcome(2, 3, error=StreamAborted("left", code="streamAborted")))
    assert type(aborted.error) is e.ClientError and aborted.error.code == "streamAborted"
    spec = spec_of(TASK)
    assert render(spec, aborted) == render(spec, Outcome(2, 3, error=StreamAborted("left", code="streamAborted")))


def test_results_stored_by_a_version_before_neutral_outcomes_read_back_as_they_were() -> None:
    """Rows a gateway before neutral outcomes wrote (its tasks table, captured from a real run of
    that version on the fake backend): each result reads back as the same result and renders to
    the very item that version stored and answered with."""
    rows = orjson.loads((FIXTURES / "tasks_rows_before_neutral_outcomes.json").read_bytes())["rows"]
    for row in rows:
        record = task_record(SimpleNamespace(**row, account_id=1, key_id=1, owner=None, updated_at=None))
        spec = spec_of(row["request"], row["fingerprint"])
        assert len(record.outcomes) == len(row["results"])
        for stored, outcome in zip(row["results"], record.outcomes, strict=True):
            assert outcome is not None
            assert render(spec, outcome) == stored
    success = task_record(SimpleNamespace(**rows[0], account_id=1, key_id=1, owner=None, updated_at=None))
    first = success.outcomes[0]
    assert first is not None and first.choice is not None and first.error is None
    assert (first.choice.text, first.seed, first.usage.input_tokens, first.usage.output_tokens) == (
        "one two three",
        7,
        6,
        3,
    )
    assert first.cost == Cost(24, 0.000012)
    failed = task_record(SimpleNamespace(**rows[1], account_id=1, key_id=1, owner=None, updated_at=None)).outcomes[0]
    assert failed is not None and failed.error is not None and failed.error.code == "providerError"
    # Polled, it answers with the status that version gave it (502, the code's).
    batch = Batch(gateway=None, jobs=None, principal=None)  # type: ignore[arg-type]
    spec = spec_of(rows[1]["request"], rows[1]["fingerprint"])
    batch.add_results(Job(spec, 1, 1, None, 1, [failed], [None]))
    assert batch.errors == [(502, rows[1]["results"][0]["error"])]


def test_an_unknown_stored_shape_reads_as_an_error_not_a_crash() -> None:
    outcome = outcome_of({"something": "else"}, 0)
    assert isinstance(outcome.error, e.InternalError) and outcome.error.message == UNREADABLE
