"""Image token costs by each provider's documented rule, from the image's own header."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from gatewright.backends.images import UNKNOWN_SIZE, anthropic_image_tokens, image_size, openai_image_tokens
from gatewright.core.types import ImagePart


def png(width: int, height: int) -> bytes:
    """A complete, valid greyscale PNG (every byte a real decoder would need)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg_head(width: int, height: int) -> bytes:
    """A JPEG's start: SOI, a JFIF APP0 segment, then the baseline frame header with the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0


def gif_head(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"


def webp_head(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def inline(data: bytes, media_type: str) -> ImagePart:
    return ImagePart(f"data:{media_type};base64,{base64.b64encode(data).decode()}", media_type)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (png(300, 200), "image/png"),
        (jpeg_head(300, 200), "image/jpeg"),
        (gif_head(300, 200), "image/gif"),
        (webp_head(300, 200), "image/webp"),
    ],
)
def test_sizes_come_from_the_header(data: bytes, media_type: str) -> None:
    assert image_size(inline(data, media_type)) == (300, 200)


def test_unreadable_or_remote_images_count_at_a_typical_size() -> None:
    assert image_size(ImagePart("https://example.com/cat.png")) == UNKNOWN_SIZE
    assert image_size(inline(b"not an image", "image/png")) == UNKNOWN_SIZE


def test_the_providers_rules() -> None:
    # OpenAI's worked examples (vision guide): 1024×1024 → 765 tokens, 2048×4096 → 1105 tokens.
    assert openai_image_tokens(inline(gif_head(1024, 1024), "image/gif")) == 765
    assert openai_image_tokens(inline(gif_head(2048, 4096), "image/gif")) == 1105
    # Anthropic's table: 1000×1000 ≈ 1334 tokens; larger images are scaled down first (~1.15 MP).
    assert anthropic_image_tokens(inline(png(1000, 1000), "image/png")) == 1334
    assert anthropic_image_tokens(inline(gif_head(4000, 4000), "image/gif")) == 1534
