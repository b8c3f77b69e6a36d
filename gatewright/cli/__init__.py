"""The ``gatewright`` command: serve, keys, credits, usage, models."""

from __future__ import annotations

import typer

from gatewright.cli.accounts import app as accounts_app
from gatewright.cli.accounts import codes_app, operator_app
from gatewright.cli.config import app as config_app
from gatewright.cli.credits import app as credits_app
from gatewright.cli.db import app as db_app
from gatewright.cli.keys import app as keys_app
from gatewright.cli.models import app as models_app
from gatewright.cli.serve import serve
from gatewright.cli.usage import usage

app = typer.Typer(help="gatewright: one API key, many models, on your own machine.", no_args_is_help=True)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")
app.add_typer(accounts_app, name="accounts")
app.add_typer(codes_app, name="codes")
app.add_typer(operator_app, name="operator")
app.command()(usage)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"gatewright {version('gatewright')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("gatewright (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """gatewright: one API key, many models, on your own machine."""


def main() -> None:
    app()
