"""What the platform commands share: the store named by the settings, the account to act on, and
errors printed as one readable line instead of a traceback.

The commands write to the same store a running gateway uses (SQLite in ``GATEWRIGHT_DATA_DIR`` or
``GATEWRIGHT_DATABASE_URL``); the gateway sees key changes within its auth cache's lifetime
(``GATEWRIGHT_AUTH_CACHE_SECONDS``, 5 s by default) and balance changes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import typer
from rich.console import Console

from gatewright.cli.config import settings_or_exit
from gatewright.core.accounts import Accounts
from gatewright.core.billing import credits_to_usd
from gatewright.core.errors import GatewrightError
from gatewright.wiring import open_accounts

T = TypeVar("T")


def console() -> Console:
    # Made per use, so the terminal's width (COLUMNS) is read when printing, not at import.
    return Console()


ACCOUNT_OPTION = typer.Option(None, "--account", help="Account id (needed only when the store has several).")


class CommandError(Exception):
    """Something the user can fix; printed without a traceback."""


def run(action: Callable[[Accounts], Awaitable[T]]) -> T:
    """Open the store, run ``action`` on it, and turn failures into a message and exit code 1."""

    settings = settings_or_exit()

    async def go() -> T:
        async with open_accounts(settings) as accounts:
            return await action(accounts)

    try:
        return asyncio.run(go())
    except (GatewrightError, CommandError) as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None


async def account_id(accounts: Accounts, given: int | None) -> int:
    """The account to act on: the one given, or the store's only account."""
    if given is not None:
        await accounts.account(given)  # NotFound when it does not exist
        return given
    rows = await accounts.accounts()
    if not rows:
        raise CommandError("the store has no account yet: start `gatewright serve` once, which creates one")
    if len(rows) > 1:
        listed = ", ".join(f"{row.id} ({row.name})" for row in rows)
        raise CommandError(f"the store has several accounts ({listed}): choose one with --account")
    return int(rows[0].id)


def credits_text(credits: int) -> str:
    """``2,500,000 (1.25 USD)``: credits with their dollars, to the last significant digit."""
    usd = f"{credits_to_usd(credits):.7f}".rstrip("0")
    if len(usd.partition(".")[2]) < 2:
        usd = f"{float(usd):.2f}"
    return f"{credits:,} ({usd} USD)"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"
