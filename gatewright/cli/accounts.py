"""``gatewright accounts``, ``gatewright codes`` and ``gatewright operator``: what the operator
does, from the machine that holds the store (the same as ``/v1/admin/…`` with the operator key).

A change made here reaches a running gateway at once for billed requests (the ledger reads the
account's state in each reservation) and within ``GATEWRIGHT_AUTH_CACHE_SECONDS`` for other calls.
"""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from gatewright.cli.store import console, credits_text, run, when
from gatewright.core.accounts import Accounts
from gatewright.core.billing import usd_to_credits
from gatewright.core.clock import utcnow

app = typer.Typer(help="Create, list, disable and delete accounts (the operator's side).", no_args_is_help=True)
codes_app = typer.Typer(help="Mint and list redemption codes.", no_args_is_help=True)
operator_app = typer.Typer(help="The operator's keys (accounts, credits, codes; never models).", no_args_is_help=True)


async def _print_accounts(accounts: Accounts, only: int | None = None) -> None:
    table = Table(title="accounts")
    for column in ("id", "name", "email", "status", "balance", "reserved", "spent", "created"):
        table.add_column(column, overflow="fold")
    for row in await accounts.accounts():
        if only is not None and row.id != only:
            continue
        table.add_row(
            str(row.id),
            row.name,
            row.email or "-",
            "[red]disabled[/red]" if row.disabled else "[green]enabled[/green]",
            credits_text(row.balance),
            credits_text(row.reserved),
            credits_text(row.spent),
            when(row.created_at),
        )
    console().print(table)


@app.command()
def create(
    name: str = typer.Argument(..., help="The account's name."),
    email: str = typer.Option(None, help="A contact address (shown in /v2/billing/detail)."),
    credits: int = typer.Option(0, min=0, help="Starting credits (2,000,000 = 1 USD)."),
) -> None:
    """Create an account and its first management key (printed once)."""

    async def action(accounts: Accounts) -> None:
        account_id = await accounts.create_account(name, credits, email=email, actor="cli")
        made = await accounts.create_key(account_id, "management", name="management", scopes=[])
        await _print_accounts(accounts, account_id)
        console().print("The account's management key (copy it now; the store keeps only its hash):")
        console().print(made.key, style="bold", soft_wrap=True, highlight=False)

    run(action)


@app.command("list")
def list_accounts() -> None:
    """List accounts with balance, what requests in flight hold, and spend."""
    run(_print_accounts)


def _set(account_id: int, **changes: object) -> None:
    async def action(accounts: Accounts) -> None:
        await accounts.update_account(account_id, changes)
        await _print_accounts(accounts, account_id)

    run(action)


@app.command()
def disable(account_id: int = typer.Argument(..., help="The account's id.")) -> None:
    """Disable an account: its keys are refused (billed requests at once, everywhere)."""
    _set(account_id, disabled=True)


@app.command()
def enable(account_id: int = typer.Argument(..., help="The account's id.")) -> None:
    """Enable a disabled account."""
    _set(account_id, disabled=False)


@app.command()
def rename(account_id: int = typer.Argument(...), name: str = typer.Argument(...)) -> None:
    """Rename an account."""
    _set(account_id, name=name)


@app.command()
def delete(account_id: int = typer.Argument(..., help="The account's id.")) -> None:
    """Delete an account (refused while requests in flight hold its credits); its history stays."""

    async def action(accounts: Accounts) -> None:
        await accounts.delete_account(account_id)
        console().print(f"deleted account {account_id}")

    run(action)


@codes_app.command()
def mint(
    amount: float = typer.Argument(..., help="What each code pays, in credits; with --usd, US dollars."),
    usd: bool = typer.Option(False, "--usd", help="AMOUNT is in USD."),
    count: int = typer.Option(1, min=1, max=1000, help="How many codes."),
    expires_in_days: float = typer.Option(None, min=0, help="Codes expire after this many days."),
    note: str = typer.Option(None, help="Kept with the codes."),
) -> None:
    """Mint redemption codes and print them (the only time they are shown)."""
    if not usd and amount != int(amount):
        raise typer.BadParameter("credits are whole numbers; use --usd for dollar amounts", param_hint="AMOUNT")
    credits = usd_to_credits(amount) if usd else int(amount)
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None

    async def action(accounts: Accounts) -> None:
        for made in await accounts.mint_codes(credits, count, expires, note, "cli"):
            console().print(made.code, soft_wrap=True, highlight=False)

    run(action)


@codes_app.command("list")
def list_codes(limit: int = typer.Option(50, min=1, max=1000)) -> None:
    """Codes, newest first, with who redeemed them."""

    async def action(accounts: Accounts) -> None:
        table = Table(title="redemption codes")
        for column in ("prefix", "credits", "note", "created", "expires", "redeemed", "by account"):
            table.add_column(column, overflow="fold")
        for row in await accounts.codes(limit):
            by = str(row.redeemed_by) if row.redeemed_by is not None else "-"
            table.add_row(
                row.prefix,
                credits_text(row.credits),
                row.note or "-",
                when(row.created_at),
                when(row.expires_at),
                when(row.redeemed_at),
                by,
            )
        console().print(table)

    run(action)


@operator_app.command("create-key")
def create_operator_key(name: str = typer.Option(None, help="A label for the key.")) -> None:
    """Make an operator key and print it (the only time it is shown)."""

    async def action(accounts: Accounts) -> None:
        _, key = await accounts.create_operator_key(name)
        console().print("Copy the operator key now; the store keeps only its hash:")
        console().print(key, style="bold", soft_wrap=True, highlight=False)

    run(action)


@operator_app.command("list")
def list_operator_keys() -> None:
    """The operator keys (prefixes only)."""

    async def action(accounts: Accounts) -> None:
        for row in await accounts.operator_keys():
            console().print(f"{row.prefix}  {row.name or '-'}  {when(row.created_at)}")

    run(action)


@operator_app.command("delete")
def delete_operator_key(prefix: str = typer.Argument(..., help="The key's 8-character prefix.")) -> None:
    """Delete an operator key (refused at once: operator keys are never cached)."""

    async def action(accounts: Accounts) -> None:
        await accounts.delete_operator_key(prefix)
        console().print(f"deleted operator key {prefix}")

    run(action)
