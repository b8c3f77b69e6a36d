"""What an image in a prompt costs in tokens, as each provider counts it, for upstreams whose
token counts the gateway has to estimate (``count_tokens``, the context check, the credit hold).

The size comes from the image's own header when it is inline (a ``data:`` URL): PNG, GIF, JPEG and
WebP are read without decoding the picture. An image given by URL is not fetched (that would be a
request to somewhere the caller chose); it is counted at a typical 1024×1024.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable

from gatewright.core.types import ImagePart

UNKNOWN_SIZE = (1024, 1024)
# Enough base64 for any header we read (a JPEG's size may follow large EXIF blocks).
HEAD_CHARS = 256 * 1024


def _png(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    return None


def _gif(head: bytes) -> tuple[int, int] | None:
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    kind = head[12:16]
    if kind == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if kind == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


# JPEG start-of-frame markers (baseline, progressive, ...): they carry the size.
SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg(head: bytes) -> tuple[int, int] | None:
    if head[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker in SOF:
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return int(width), int(height)
        length = int.from_bytes(head[at + 2 : at + 4], "big")
        at += 2 + length
    return None


READERS: tuple[Callable[[bytes], tuple[int, int] | None], ...] = (_png, _jpeg, _gif, _webp)


def image_size(part: ImagePart) -> tuple[int, int]:
    """(width, height) from an inline image's header, else a typical size."""
    if not part.url.startswith("data:"):
        return UNKNOWN_SIZE
    encoded = part.url.partition(",")[2][:HEAD_CHARS]
    try:
        head = base64.b64decode(encoded[: len(encoded) // 4 * 4])
    except (binascii.Error, ValueError):
        return UNKNOWN_SIZE
    for read in READERS:
        size = read(head)
        if size is not None and size[0] > 0 and size[1] > 0:
            return size
    return UNKNOWN_SIZE


def anthropic_image_tokens(part: ImagePart) -> int:
    """Anthropic's rule (vision guide, "Calculate image costs"): an image is scaled down to at most
    1568 px on its long edge and about 1.15 megapixels, then costs width × height / 750 tokens."""
    width, height = image_size(part)
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / 750))


def openai_image_tokens(part: ImagePart) -> int:
    """OpenAI's rule for high detail (vision guide, "Calculating costs"): fit in 2048×2048, scale the
    short side down to 768, then 85 tokens plus 170 per 512-px tile."""
    width, height = image_size(part)
    fit = min(1.0, 2048 / max(width, height))
    short = min(1.0, 768 / (min(width, height) * fit))
    tiles = math.ceil(width * fit * short / 512) * math.ceil(height * fit * short / 512)
    return 85 + 170 * tiles
