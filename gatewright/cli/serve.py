"""``gatewright serve``: start the gateway (embedded model, SQLite) and say how to call it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import uvicorn

from gatewright.cli.config import settings_or_exit, tracing_or_exit
from gatewright.settings import Settings, configure_logging


def _banner(settings: Settings, api_key: str | None, management_key: str | None) -> str:
    base = f"http://{settings.host}:{settings.port}"
    key = api_key or "$GATEWRIGHT_API_KEY"
    lines = [""]
    if api_key and management_key:
        lines += [
            "A new store: created an account with starting credits and two keys. They are shown",
            "only now (the store keeps hashes); copy them somewhere safe.",
            f"  API key (calls models):          {api_key}",
            f"  management key (keys, billing):  {management_key}",
            "",
        ]
    elif settings.platform:
        lines += ["Use an API key made on first start, or make one: gatewright keys create", ""]
    auth = f' -H "Authorization: Bearer {key}"' if settings.platform else ""
    lines += [
        "Try it:",
        f"  curl {base}/v1/chat/completions{auth} -H 'content-type: application/json' \\",
        '    -d \'{"model": "local", "messages": [{"role": "user", "content": "Say hello"}]}\'',
        "",
        "From Python (pip install openai):",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{base}/v1", api_key="{key if settings.platform else "unused"}")',
        '  print(client.chat.completions.create(model="local",',
        '        messages=[{"role": "user", "content": "Say hello"}]).choices[0].message.content)',
        "",
    ]
    return "\n".join(lines)


def serve(
    host: str = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default 8000)."),
    catalog: Path = typer.Option(None, help="Catalog TOML file (default: the packaged one)."),
    bare: bool = typer.Option(False, "--bare", help="No keys, billing or limits: a plain proxy."),
    log_level: str = typer.Option(None, help="debug, info, warning, error."),
    workers: int = typer.Option(None, help="Processes on the port (default 1; see Settings.workers)."),
) -> None:
    """Start the gateway."""
    given = {"host": host, "port": port, "catalog": catalog, "log_level": log_level, "workers": workers}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if bare:
        overrides["platform"] = False
    settings = settings_or_exit(**overrides)
    tracing_or_exit()
    from gatewright.core.catalog import CatalogError
    from gatewright.wiring import bootstrap, load_catalog

    try:  # before anything is created: a bad catalog is reported as where and why, not a traceback
        model_catalog = load_catalog(settings)
    except CatalogError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    from gatewright.app import create_app

    api_key = management_key = None
    if settings.platform:
        first = asyncio.run(bootstrap(settings))
        if first is not None:
            api_key, management_key = first.api_key.key, first.management_key.key
    server = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through gatewright's handler (text or JSON)
        timeout_keep_alive=settings.keep_alive_seconds,
        access_log=False,  # gatewright logs its own access line, with the request id
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    if settings.workers == 1:
        app = create_app(settings, catalog=model_catalog)
        typer.echo(_banner(settings, api_key, management_key))
        uvicorn.run(app, **server)  # type: ignore[arg-type]
        return
    # Several processes: each builds its app from the environment (the settings travel there).
    for name, value in overrides.items():
        os.environ[f"GATEWRIGHT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    typer.echo(_banner(settings, api_key, management_key))
    with multiprocess_metrics():
        uvicorn.run("gatewright.app:create_app_from_env", factory=True, workers=settings.workers, **server)  # type: ignore[arg-type]


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[str]:
    """Workers count into files in one directory that every scrape adds up (prometheus-client's
    multiprocess mode). The operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (emptied first: an
    earlier run's counts must not be added to this one's); otherwise a fresh temporary directory,
    removed at the end."""
    from gatewright.core.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="gatewright-metrics-")
    prepare_multiprocess_dir(path)
    os.environ[MULTIPROC_ENV] = path  # before the workers start (and import prometheus_client)
    try:
        yield path
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)
