"""Catalog TOML written from Python data, for tests that build a catalog per case or per upstream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(type(value))


def catalog_toml(models: list[dict[str, Any]]) -> str:
    """``[[models]]`` tables, one key per line (inline tables for nested values)."""
    out = []
    for entry in models:
        out.append("[[models]]")
        out += [f"{key} = {toml_value(value)}" for key, value in entry.items()]
        out.append("")
    return "\n".join(out)
