"""``gatewright config check``: are the settings and the catalog usable, before a deployment.

Also what every command uses to read settings: a bad value ends the command with one line per
problem (which variable or flag, what value, what is allowed) and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import typer
from sqlalchemy.engine import make_url

from gatewright.settings import Settings, SettingsError, load_settings, unknown_variables

app = typer.Typer(help="Check the settings and the catalog.", no_args_is_help=True)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        for line in error.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


def tracing_or_exit() -> None:
    """The OTEL_* variables, when they turn tracing on, must be usable: one line each, exit 2."""
    from gatewright import telemetry

    wrong = telemetry.problems(os.environ) if telemetry.wanted(os.environ) else []
    for line in wrong:
        typer.echo(f"error: {line}", err=True)
    if wrong:
        raise typer.Exit(2)


def shown_url(url: str) -> str:
    """A database URL fit for printing: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


@app.command()
def check(
    store: bool = typer.Option(False, "--store", help="Also connect to the store and check its schema."),
) -> None:
    """Validate the settings (GATEWRIGHT_* variables) and the catalog; exit 1 on any problem
    (unknown GATEWRIGHT_* variables included), 2 when the settings cannot be read at all."""
    settings = settings_or_exit()
    problems = [f"warning: {line}" for line in unknown_variables()]
    from gatewright.core.catalog import CatalogError
    from gatewright.wiring import load_catalog

    typer.echo(f"store: {shown_url(settings.db_url)}")
    typer.echo(f"rate limits: {'redis ' + shown_url(settings.redis_url) if settings.redis_url else 'in process'}")
    typer.echo(f"workers: {settings.workers}; logs: {settings.log_format}, {settings.log_level}")
    from gatewright import telemetry

    if telemetry.wanted(os.environ):
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        typer.echo(f"traces: {os.environ.get('OTEL_TRACES_EXPORTER', 'otlp')} {endpoint or ''}".rstrip())
        problems += [f"error: {line}" for line in telemetry.problems(os.environ)]
    else:
        typer.echo("traces: off (no OTEL_* variables)")
    try:
        catalog = load_catalog(settings)
    except CatalogError as error:
        problems.append(f"error: catalog {settings.catalog}: {error}")
    else:
        from gatewright.cli.models import status_of

        typer.echo(f"catalog: {settings.catalog} (default model {catalog.default_model})")
        for entry in catalog:
            typer.echo(f"  {entry.id}: {status_of(entry)}")
    if store:
        problems += asyncio.run(_check_store(settings))
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("ok")


async def _check_store(settings: Settings) -> list[str]:
    from gatewright.store.db import schema_is_current
    from gatewright.wiring import connect_store

    try:
        async with connect_store(settings) as engine:
            current, detail = await schema_is_current(engine)
    except Exception as error:  # whatever the driver raises: the check reports it in one line
        return [f"error: store {shown_url(settings.db_url)}: {type(error).__name__}: {error}".splitlines()[0]]
    typer.echo(f"store: {detail}")
    return [] if current else ["error: store schema is not current: run `gatewright db upgrade`"]
