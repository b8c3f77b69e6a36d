"""The ``gatewright`` command: serve, keys, credits, usage, models."""

from __future__ import annotations

import typer

from gatewright.cli.models import app as models_app
from gatewright.cli.serve import serve

app = typer.Typer(help="gatewright: one API key, many models, on your own machine.", no_args_is_help=True)
app.command()(serve)
app.add_typer(models_app, name="models")


@app.callback()
def _root() -> None:
    """gatewright: one API key, many models, on your own machine."""


def main() -> None:
    app()
