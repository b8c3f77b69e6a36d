"""``gatewright keys``: create, list, disable, enable and delete API and management keys."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from gatewright.cli.store import ACCOUNT_OPTION, account_id, console, credits_text, run, when
from gatewright.core.accounts import SCOPES, Accounts, KeyLimit, month_spent
from gatewright.core.clock import RETENTIONS, utcnow

app = typer.Typer(help="Create, list, disable and delete keys.", no_args_is_help=True)


def _table(rows: list[Any], title: str) -> Table:
    now = utcnow()
    table = Table(title=title)
    for column in ("prefix", "kind", "name", "status", "scopes", "spend limit", "rate limit", "this month", "created"):
        table.add_column(column, overflow="fold")
    for row in rows:
        limit = f"{credits_text(row.limit_threshold)} / {row.limit_retention}" if row.limit_retention else "-"
        rpm, tpm = row.requests_per_minute, row.tokens_per_minute
        rate = f"{rpm or 'default'} req · {tpm or 'default'} tok /min" if rpm or tpm else "default"
        table.add_row(
            row.prefix,
            row.kind,
            row.name or "-",
            "[red]disabled[/red]" if row.disabled else "[green]enabled[/green]",
            ", ".join(row.scopes or ()) or "all",
            limit,
            rate,
            credits_text(month_spent(row, now)),
            when(row.created_at),
        )
    return table


@app.command()
def create(
    name: str = typer.Option(None, help="A label for the key."),
    management: bool = typer.Option(False, "--management", help="A management key (keys, billing) instead."),
    scope: list[str] = typer.Option(None, help=f"What an API key may call ({', '.join(SCOPES)}); repeatable."),
    limit_usd: float = typer.Option(None, "--limit-usd", min=0, help="Spending limit in USD per period."),
    retention: str = typer.Option("no_reset", help=f"Period of the spending limit: {', '.join(RETENTIONS)}."),
    rpm: int = typer.Option(None, "--rpm", min=1, help="Requests per minute (default: the gateway's)."),
    tpm: int = typer.Option(None, "--tpm", min=1, help="Tokens per minute (default: the gateway's)."),
    account: int = ACCOUNT_OPTION,
) -> None:
    """Create a key and print it (the only time it is shown)."""

    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        made = await accounts.create_key(
            target,
            "management" if management else "api",
            name=name,
            scopes=[] if management else (scope or None),
            limit=KeyLimit(retention, limit_usd) if limit_usd is not None else None,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
        )
        console().print(_table([made.row], "new key"))
        console().print("Copy the key now; the store keeps only its hash:")
        console().print(made.key, style="bold", soft_wrap=True, highlight=False)

    run(action)


@app.command("list")
def list_keys(account: int = ACCOUNT_OPTION) -> None:
    """List the account's keys, oldest first (deleted keys are left out)."""

    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        console().print(_table(await accounts.keys(target), f"keys of account {target}"))

    run(action)


def _set_disabled(prefix: str, account: int | None, disabled: bool) -> None:
    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        row = await accounts.update_key(prefix, target, {"disabled": disabled})
        console().print(_table([row], "key " + ("disabled" if disabled else "enabled")))

    run(action)


@app.command()
def disable(
    prefix: str = typer.Argument(..., help="The key's 8-character prefix."), account: int = ACCOUNT_OPTION
) -> None:
    """Disable a key: its calls are refused with 403 until it is enabled again."""
    _set_disabled(prefix, account, True)


@app.command()
def enable(
    prefix: str = typer.Argument(..., help="The key's 8-character prefix."), account: int = ACCOUNT_OPTION
) -> None:
    """Enable a disabled key."""
    _set_disabled(prefix, account, False)


@app.command()
def delete(
    prefix: str = typer.Argument(..., help="The key's 8-character prefix."), account: int = ACCOUNT_OPTION
) -> None:
    """Delete a key for good (its usage history stays)."""

    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        await accounts.delete_key(prefix, target)
        console().print(f"deleted key {prefix}")

    run(action)
