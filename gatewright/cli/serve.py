"""``gatewright serve``: start the gateway (embedded model, SQLite) and say how to call it."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
import uvicorn

from gatewright.settings import Settings


def serve(
    host: str = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default 8000)."),
    catalog: Path = typer.Option(None, help="Catalog TOML file (default: the packaged one)."),
    bare: bool = typer.Option(False, "--bare", help="No keys, billing or limits: a plain proxy."),
    log_level: str = typer.Option(None, help="debug, info, warning, error."),
) -> None:
    """Start the gateway."""
    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "catalog": catalog, "log_level": log_level}.items()
        if v is not None
    }
    if bare:
        overrides["platform"] = False
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from gatewright.app import create_app

    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,  # gatewright logs its own access line, with the request id
    )
