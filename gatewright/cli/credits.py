"""``gatewright credits``: add (or remove) credits, and show the balance with its ledger."""

from __future__ import annotations

import typer
from rich.table import Table

from gatewright.cli.store import ACCOUNT_OPTION, account_id, console, credits_text, run, when
from gatewright.core.accounts import Accounts
from gatewright.core.billing import CREDITS_PER_USD, usd_to_credits

app = typer.Typer(help="Add credits and show the balance (1 USD = 2,000,000 credits).", no_args_is_help=True)


async def _show(accounts: Accounts, target: int, entries: int) -> None:
    row = await accounts.account(target)
    summary = Table(title=f"account {target} ({row.name})")
    for column in ("balance", "held by requests in flight", "available", "low-balance threshold"):
        summary.add_column(column, justify="right")
    summary.add_row(
        credits_text(row.balance),
        credits_text(row.reserved),
        credits_text(row.balance - row.reserved),
        credits_text(row.low_balance_threshold),
    )
    console().print(summary)
    if entries <= 0:
        return
    ledger = Table(title=f"last {entries} ledger entries (every change of balance)")
    for column, justify in (("time", "left"), ("kind", "left"), ("credits", "right"), ("balance after", "right")):
        ledger.add_column(column, justify=justify)  # type: ignore[arg-type]
    ledger.add_column("request / note", overflow="fold")
    for entry in await accounts.ledger_entries(target, limit=entries):
        ledger.add_row(
            when(entry.created_at),
            entry.kind,
            f"{entry.credits:+,}",
            f"{entry.balance_after:,}",
            entry.request_id or entry.note or "-",
        )
    console().print(ledger)


@app.command()
def add(
    amount: float = typer.Argument(..., help="Credits to add (negative: remove); with --usd, US dollars."),
    usd: bool = typer.Option(False, "--usd", help=f"AMOUNT is in USD ({CREDITS_PER_USD:,} credits each)."),
    note: str = typer.Option("added with the CLI", help="Recorded in the ledger entry."),
    account: int = ACCOUNT_OPTION,
) -> None:
    """Add credits to the account; prints the new balance."""
    if not usd and amount != int(amount):
        raise typer.BadParameter("credits are whole numbers; use --usd for dollar amounts", param_hint="AMOUNT")
    credits = usd_to_credits(amount) if usd else int(amount)

    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        await accounts.add_credits(target, credits, note, actor="cli")
        console().print(f"added {credits_text(credits)}")
        await _show(accounts, target, entries=0)

    run(action)


@app.command()
def show(
    entries: int = typer.Option(10, "--entries", min=0, help="How many ledger entries to list."),
    account: int = ACCOUNT_OPTION,
) -> None:
    """Show the balance, what requests in flight hold, and the latest ledger entries."""

    async def action(accounts: Accounts) -> None:
        await _show(accounts, await account_id(accounts, account), entries)

    run(action)
