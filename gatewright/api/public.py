"""What of an error a caller may read: every dialect's error object takes its message from here.

- A server-side failure (``InternalError``, a bare ``ServerError``) answers a generic message with
  the request id; its own text (an exception's repr, SQL, a file path) goes to the log only.
- Any other message is passed through ``redact``: an upstream's error body is relayed to the caller
  (it often says what was wrong with the request), and some upstreams echo the key they were sent.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

from gatewright.core.errors import GatewrightError, InternalError, ServerError

log = logging.getLogger("gatewright")

# The id of the request being answered, set by the front door (``api.front``).
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("gatewright_request_id", default=None)

REDACTED = "[redacted]"
# What looks like a credential: provider key formats, bearer tokens, key=value pairs naming a
# secret, URL userinfo, and any long unbroken token (UUIDs, 36 characters, stay readable).
_SECRETS = [
    re.compile(r"\b(?:sk|rk|pk)-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_\-]{12,}"),
    re.compile(r"\bgwm?-[0-9a-f]{16,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(
        r"(?i)((?:api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret|secret|password|passwd|credential)s?"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]{4,}"
    ),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"\b[A-Za-z0-9_\-]{40,}\b"),
]


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    for pattern in _SECRETS:
        keep = r"\1" if pattern.groups else ""  # a pattern's group is the part kept (``api_key=``)
        text = pattern.sub(keep + REDACTED, text)
    return text


def internal(error: BaseException) -> InternalError:
    """A bug met while answering (mid-stream, where no other layer can answer it): logged whole."""
    log.error("unhandled error, request_id=%s", CURRENT_REQUEST.get(), exc_info=error)
    return InternalError(f"unhandled {type(error).__name__}")


def is_internal(error: GatewrightError) -> bool:
    return isinstance(error, InternalError) or type(error) is ServerError


def public_message(error: GatewrightError) -> str:
    if is_internal(error):
        rid = CURRENT_REQUEST.get()
        log.warning("internal error answered generically, request_id=%s: %s", rid, error.message)
        where = f" (request id {rid})" if rid else ""
        return f"The server had an error while processing your request{where}. It is logged; retry, or report it."
    return redact(error.message)
