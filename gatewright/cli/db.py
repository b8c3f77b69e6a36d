"""``gatewright db``: migrations on their own (before starting a new version on several replicas)."""

from __future__ import annotations

import asyncio

import typer

from gatewright.cli.config import settings_or_exit, shown_url

app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@app.command()
def upgrade() -> None:
    """Bring the store's schema to this version's head, then exit. Replicas starting at the same
    time wait for each other (a lock), so running this first is optional but makes starts quick."""
    from gatewright.store.db import schema_is_current
    from gatewright.wiring import open_store

    settings = settings_or_exit()

    async def go() -> str:
        async with open_store(settings) as engine:  # migrates
            return (await schema_is_current(engine))[1]

    try:
        detail = asyncio.run(go())
    except Exception as error:  # unreachable store, bad credentials: one line, not a traceback
        typer.echo(f"error: migrating {shown_url(settings.db_url)} failed: {type(error).__name__}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{shown_url(settings.db_url)}: {detail}")


@app.command()
def current() -> None:
    """Show the store's schema revision; exit 1 when it is not this version's head."""
    from gatewright.store.db import schema_is_current
    from gatewright.wiring import connect_store

    settings = settings_or_exit()

    async def go() -> tuple[bool, str]:
        async with connect_store(settings) as engine:
            return await schema_is_current(engine)

    try:
        ok, detail = asyncio.run(go())
    except Exception as error:
        typer.echo(f"error: {shown_url(settings.db_url)}: {type(error).__name__}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{shown_url(settings.db_url)}: {detail}")
    if not ok:
        raise typer.Exit(1)
