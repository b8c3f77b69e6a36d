"""Reading Anthropic SSE bodies strictly: framing, names and the event grammar."""

from __future__ import annotations

import json
import re
from typing import Any

# message_start, then blocks (start, deltas, stop), then message_delta, message_stop; pings anywhere.
GRAMMAR = re.compile(r"S(BD*E)*(MT)?")
# A stream cut short by an error: any prefix of the above.
PREFIX = re.compile(r"S(BD*E)*(BD*|MT?)?")
LETTER = {
    "message_start": "S",
    "content_block_start": "B",
    "content_block_delta": "D",
    "content_block_stop": "E",
    "message_delta": "M",
    "message_stop": "T",
}


def parse_frames(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``event: NAME\\ndata: JSON\\n\\n`` frames; every data object's ``type`` equals its event name."""
    assert body.endswith(b"\n\n"), body[-80:]
    out: list[tuple[str, dict[str, Any]]] = []
    for frame in body[:-2].split(b"\n\n"):
        lines = frame.split(b"\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), frame
        name = lines[0][7:].decode()
        data = json.loads(lines[1][6:])
        assert data["type"] == name, frame
        out.append((name, data))
    return out


def check_order(events: list[tuple[str, dict[str, Any]]], *, complete: bool = True) -> None:
    """The event grammar, and block indexes 0, 1, 2 … matching each start, delta and stop."""
    names = [name for name, _ in events if name not in ("ping", "error")]
    assert (GRAMMAR if complete else PREFIX).fullmatch("".join(LETTER[name] for name in names)), names
    if complete:
        assert names[-2:] == ["message_delta", "message_stop"], names
    index = -1
    for name, data in events:
        if name == "content_block_start":
            index += 1
            assert data["index"] == index
        elif name in ("content_block_delta", "content_block_stop"):
            assert data["index"] == index
