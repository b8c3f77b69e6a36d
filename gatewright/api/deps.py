"""What every dialect's routes need from the application: the gateway and the caller."""

from __future__ import annotations

from starlette.requests import Request

from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Principal


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def authenticate(request: Request, token: str | None, fresh: bool = False) -> Principal | None:
    """The calling key, or ``None`` when the gateway runs as a bare proxy (no platform).

    ``fresh`` for every route that reserves no credits: it reads the key from the store, so a key or
    account disabled on another replica is refused at once (model routes keep the cache: their
    reservation refuses a disabled key in its own transaction)."""
    platform = gateway(request).platform
    if platform is None:
        return None
    return await platform.authenticator.authenticate(token, fresh)
