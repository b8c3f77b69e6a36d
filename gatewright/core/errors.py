"""Every failure gatewright reports, as one tree; each dialect maps it to its own wire error.

    GatewrightError
    ├── ClientError                   the caller can fix it; never billed
    │   ├── InvalidRequest            400  (param names the offending field)
    │   │   ├── UnsupportedFeature    400  a feature this model or engine does not have
    │   │   ├── ContextWindowExceeded 400  prompt + output larger than the model's window
    │   │   └── ModelInactive         400  catalog entry whose upstream key is not set
    │   ├── Unauthorized              401
    │   ├── InsufficientCredits       402  balance or key spend limit cannot cover the request
    │   ├── PermissionDenied          403  key disabled or missing a scope
    │   ├── NotFound                  404
    │   │   └── ModelNotFound         404
    │   ├── Conflict                  409
    │   ├── PayloadTooLarge           413  the body is over the gateway's limit
    │   └── RateLimited               429  (retry_after seconds)
    └── ServerError                   never billed
        ├── Overloaded                503  local engine queue full
        ├── UpstreamError             502  an upstream failed (status/message preserved)
        │   ├── UpstreamTimeout       504
        │   └── UpstreamUnavailable   503  no deployment could be reached
        └── InternalError             500

Dialects look errors up along the MRO in their own table (``api/*/errors.py``), so a new subclass
renders like its parent until it gets a row of its own.
"""

from __future__ import annotations


class GatewrightError(Exception):
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status


class ClientError(GatewrightError):
    status = 400


class InvalidRequest(ClientError):
    status = 400


class UnsupportedFeature(InvalidRequest):
    pass


class ContextWindowExceeded(InvalidRequest):
    pass


class ModelInactive(InvalidRequest):
    pass


class Unauthorized(ClientError):
    status = 401


class InsufficientCredits(ClientError):
    status = 402


class PermissionDenied(ClientError):
    status = 403


class NotFound(ClientError):
    status = 404


class ModelNotFound(NotFound):
    pass


class Conflict(ClientError):
    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class RateLimited(ClientError):
    status = 429

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ServerError(GatewrightError):
    status = 500


class Overloaded(ServerError):
    status = 503


class UpstreamError(ServerError):
    """An upstream answered with an error or not at all; ``upstream_status`` is what it sent
    (0 when it could not be reached), ``retry_after`` what it asked for, if anything."""

    status = 502

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        upstream_status: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, status=status)
        self.upstream_status = upstream_status or self.status
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamUnavailable(UpstreamError):
    status = 503


class InternalError(ServerError):
    status = 500
