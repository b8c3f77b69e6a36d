"""The ``gatewright`` command: serve, keys, credits, usage, models."""

from __future__ import annotations

import typer

from gatewright.cli.credits import app as credits_app
from gatewright.cli.keys import app as keys_app
from gatewright.cli.models import app as models_app
from gatewright.cli.serve import serve
from gatewright.cli.usage import usage

app = typer.Typer(help="gatewright: one API key, many models, on your own machine.", no_args_is_help=True)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")
app.command()(usage)
app.add_typer(models_app, name="models")


@app.callback()
def _root() -> None:
    """gatewright: one API key, many models, on your own machine."""


def main() -> None:
    app()
