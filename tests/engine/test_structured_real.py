"""Structured output on the real embedded model through the official `openai` SDK: every output
of the schema sweep parses and validates, json_object gives an object, and neither max_tokens nor
stop sequences are allowed to pass off broken JSON as complete."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai

from tests.conftest import MODEL
from tests.engine.schemas import SCHEMAS


def schema_format(schema: dict[str, Any], name: str = "answer") -> Any:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def test_every_output_of_the_schema_sweep_parses_and_validates(engine_client: openai.OpenAI) -> None:
    assert len(SCHEMAS) >= 50
    failures = []
    for seed, (prompt, schema) in enumerate(SCHEMAS):
        completion = engine_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Reply in JSON. " + prompt}],
            response_format=schema_format(schema, f"case_{seed}"),
            max_tokens=160,
            seed=seed,
        )
        choice = completion.choices[0]
        content = choice.message.content or ""
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        try:
            validator.validate(json.loads(content))
        except (ValueError, jsonschema.ValidationError) as error:
            failures.append((seed, prompt, choice.finish_reason, content, str(error)[:200]))
            continue
        if choice.finish_reason != "stop":
            failures.append((seed, prompt, choice.finish_reason, content, "complete JSON must end with stop"))
    assert failures == []


def test_json_object_gives_an_object(engine_client: openai.OpenAI) -> None:
    for seed in (1, 2):
        choice = engine_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a cat in JSON with two short fields."}],
            response_format={"type": "json_object"},
            max_tokens=80,
            seed=seed,
        ).choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content or ""), dict)


def test_every_choice_is_constrained(engine_client: openai.OpenAI) -> None:
    schema = SCHEMAS[0][1]
    completion = engine_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A person, as JSON."}],
        response_format=schema_format(schema),
        max_tokens=60,
        n=2,
        temperature=1.2,
        seed=5,
    )
    assert len(completion.choices) == 2
    for choice in completion.choices:
        jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_streamed_json_is_the_same_json(engine_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "A big city, as JSON."}],
        response_format=schema_format(SCHEMAS[1][1]),
        max_tokens=80,
        seed=9,
    )
    whole = engine_client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(engine_client.chat.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    jsonschema.validate(json.loads(whole or ""), SCHEMAS[1][1])


def test_max_tokens_cuts_json_with_length(engine_client: openai.OpenAI) -> None:
    choice = engine_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A person, as JSON."}],
        response_format=schema_format(SCHEMAS[0][1]),
        max_tokens=4,
        seed=1,
    ).choices[0]
    assert choice.finish_reason == "length"  # documented: the JSON is then incomplete
    assert (choice.message.content or "").startswith("{")


def test_stop_sequences_do_not_cut_constrained_json(engine_client: openai.OpenAI) -> None:
    schema = SCHEMAS[0][1]
    choice = engine_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A person, as JSON."}],
        response_format=schema_format(schema),
        stop=['"', ","],
        max_tokens=60,
        seed=4,
    ).choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content or ""), schema)
