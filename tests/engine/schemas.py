"""Fifty-odd JSON Schemas with a short prompt each, for the structured-output sweep on the real
model: nested objects, arrays, enums, required and optional fields, bounded numbers, anyOf/oneOf,
$ref, formats and patterns. Strings and arrays are bounded so that outputs stay short on a slow
machine; what is checked is only that every output parses and validates."""

from __future__ import annotations

from typing import Any


def obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    """A closed object; every property required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def text(most: int, least: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": least, "maxLength": most}


def integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def number(low: float, high: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high}


def items(item: dict[str, Any], most: int, least: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": least, "maxItems": most}


def enum(*values: Any) -> dict[str, Any]:
    return {"enum": list(values)}


ADDRESS = obj(street=text(24), zip={"type": "string", "pattern": "^[0-9]{5}$"})

SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("A person.", obj(name=text(20), age=integer(0, 120))),
    ("A big city.", obj(city=text(20), country=text(20), population=integer(0, 40_000_000))),
    ("Pick a primary color.", obj(color=enum("red", "green", "blue"))),
    ("Is 7 even?", obj(number=integer(0, 100), is_even={"type": "boolean"})),
    ("Three fruits.", obj(fruits=items(text(12), 3, 1))),
    (
        "A user account.",
        obj(
            user=obj(name=text(16), email={"type": "string", "format": "email", "maxLength": 40}),
            active={"type": "boolean"},
        ),
    ),
    ("A small value.", obj(value={"anyOf": [integer(0, 10), text(8)]})),
    ("Today's temperature.", obj(temperature=number(-50, 60), unit=enum("C", "F"))),
    ("A date in 2024.", obj(date={"type": "string", "format": "date"})),
    ("A versioned package.", obj(version={"const": "1.0"}, name=text(10))),
    ("An order of two items.", obj(items=items(obj(sku=text(8), qty=integer(1, 9)), 2, 1))),
    ("A nickname, or none.", obj(nickname={"type": ["string", "null"], "maxLength": 10}, age=integer(1, 99))),
    ("A title, maybe a subtitle.", obj(["title"], title=text(20), subtitle=text(20))),
    (
        "Home and work addresses.",
        {
            "type": "object",
            "properties": {"home": {"$ref": "#/$defs/address"}, "work": {"$ref": "#/$defs/address"}},
            "required": ["home", "work"],
            "additionalProperties": False,
            "$defs": {"address": ADDRESS},
        },
    ),
    ("An airport-style code.", obj(code={"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"})),
    ("A multiple of five.", obj(value={"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 5})),
    ("Dice rolls.", items(integer(1, 6), 4, 2)),
    ("Feature flags.", obj(dark_mode={"type": "boolean"}, beta={"type": "boolean"}, logging={"type": "boolean"})),
    ("Rate a movie.", obj(movie=text(20), rating=enum(1, 2, 3, 4, 5))),
    (
        "A shape.",
        obj(
            shape={
                "oneOf": [
                    obj(kind={"const": "circle"}, radius=integer(1, 50)),
                    obj(kind={"const": "square"}, side=integer(1, 50)),
                ]
            }
        ),
    ),
    (
        "An employee.",
        {"allOf": [obj(name=text(16), id=integer(1, 9999))], "type": "object"},
    ),
    (
        "A word and its length.",
        obj(pair={"type": "array", "prefixItems": [text(10), integer(1, 10)], "items": False, "minItems": 2}),
    ),
    (
        "A word of three to eight letters.",
        obj(word={"type": "string", "minLength": 3, "maxLength": 8, "pattern": "^[a-z]+$"}),
    ),
    (
        "A probability strictly between 0 and 1.",
        obj(p={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
    ),
    ("A tiny matrix.", obj(matrix=items(items(integer(0, 9), 2, 1), 2, 1))),
    ("A random id.", obj(id={"type": "string", "format": "uuid"})),
    ("A server address.", obj(host={"type": "string", "format": "ipv4"}, port=integer(1, 65535))),
    (
        "Scores of up to three players.",
        obj(scores={"type": "object", "additionalProperties": integer(0, 100), "maxProperties": 3}),
    ),
    ("A company.", obj(company=obj(name=text(16), ceo=obj(name=text(16), since=integer(1990, 2025))))),
    ("A quick recipe.", obj(title=text(24), ingredients=items(text(15), 3, 1), minutes=integer(1, 180))),
    (
        "A classic book.",
        obj(
            title=text(30),
            author=text(20),
            year=integer(1450, 2025),
            genres=items(enum("novel", "poetry", "drama", "essay"), 2),
        ),
    ),
    (
        "The weather in Oslo.",
        obj(city=text(16), temp=integer(-40, 40), conditions=enum("sunny", "cloudy", "rain", "snow")),
    ),
    ("A to-do item.", obj(task=text(30), done={"type": "boolean"}, priority=enum("low", "medium", "high"))),
    ("A point on a plane.", obj(x=number(-10, 10), y=number(-10, 10))),
    ("An RGB color.", obj(r=integer(0, 255), g=integer(0, 255), b=integer(0, 255))),
    ("Sentiment of 'I love it'.", obj(label=enum("positive", "negative", "neutral"), confidence=number(0, 1))),
    ("Translate 'hello'.", obj(language=enum("fr", "de", "es", "it"), text=text(30))),
    ("A product.", obj(name=text(20), price=number(0, 1000), tags=items(text(10), 3), in_stock={"type": "boolean"})),
    ("A meetup.", obj(name=text(24), date={"type": "string", "format": "date"}, attendees=integer(0, 500))),
    (
        "Result of dividing 1 by 0.",
        {
            "anyOf": [
                obj(ok={"const": True}, value=integer(-100, 100)),
                obj(ok={"const": False}, error=text(24)),
            ]
        },
    ),
    ("Is water wet?", obj(answer={"type": "boolean"})),
    ("Your mood.", obj(mood=enum("très bien", "ok", "mal"))),
    ("Say hello in Japanese.", obj(greeting=text(15))),
    (
        "A pet, maybe with an owner.",
        obj(["pet"], pet=obj(name=text(12), species=enum("cat", "dog", "fish")), owner=obj(name=text(16))),
    ),
    ("Favorite seasons.", obj(seasons=items(enum("spring", "summer", "autumn", "winter"), 3, 1))),
    ("A basement floor.", obj(floor=integer(-5, -1))),
    ("A shoe size.", obj(size={"type": "number", "minimum": 0, "maximum": 15, "multipleOf": 0.5})),
    (
        "A contact card.",
        obj(
            name=text(16),
            phone={"type": "string", "pattern": "^\\+?[0-9]{7,12}$"},
            email={"type": "string", "format": "email", "maxLength": 40},
        ),
    ),
    ("An id, number or text.", obj(id={"type": ["integer", "string"], "maxLength": 8, "minimum": 0, "maximum": 999})),
    (
        "A chess move.",
        obj(
            piece=enum("king", "queen", "rook", "bishop", "knight", "pawn"),
            to={"type": "string", "pattern": "^[a-h][1-8]$"},
        ),
    ),
    ("Two planets.", obj(planets=items(obj(name=text(10), moons=integer(0, 99)), 2, 2))),
    ("A traffic light state.", obj(state=enum("red", "amber", "green"), seconds_left=integer(0, 90))),
    ("A short poem.", obj(lines=items(text(30), 2, 2))),
]
