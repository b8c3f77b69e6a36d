"""``gatewright serve``: start the gateway (embedded model, SQLite) and say how to call it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import uvicorn

from gatewright.cli.config import settings_or_exit, shown_url, tracing_or_exit
from gatewright.cli.http_protocol import CorkedHttpToolsProtocol
from gatewright.settings import Settings, configure_logging

# Where the first start's keys go when standard output is not a terminal (a service, a log file).
KEYS_FILE = "first-start-keys.env"
OPERATOR_KEY_FILE = "operator-key.env"  # the operator key made on the first start after an upgrade


def write_first_start_keys(
    data_dir: Path, api_key: str | None, management_key: str | None, operator_key: str | None = None
) -> Path:
    """The new keys, once, in a file only the owner can read (0600). The first start after an
    upgrade makes only the operator's key: it goes to a file of its own, so a keys file the
    owner has not moved yet is not replaced."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name = KEYS_FILE if api_key else OPERATOR_KEY_FILE
    path = (data_dir / name).resolve()
    # Made 0600 from the start (never readable by others, even for a moment), then moved into
    # place: a file left by an earlier store is replaced (a first start means that store is gone).
    draft = path.with_name(f".{name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    lines = [
        "# gatewright's first start made these keys; the store keeps only their hashes.",
        "# Move them somewhere safe, then delete this file.",
    ]
    for variable, value in (
        ("GATEWRIGHT_API_KEY", api_key),
        ("GATEWRIGHT_MANAGEMENT_KEY", management_key),
        ("GATEWRIGHT_OPERATOR_KEY", operator_key),
    ):
        if value:
            lines.append(f"{variable}={value}")
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(draft, path)
    return path


def read_first_start_keys(data_dir: Path) -> tuple[str | None, str | None]:
    """(API key, management key) from ``write_first_start_keys``'s file, for tests and scripts."""
    path = data_dir / KEYS_FILE
    if not path.exists():
        return None, None
    text = path.read_text()
    api = re.search(r"^GATEWRIGHT_API_KEY=(\S+)$", text, re.M)
    management = re.search(r"^GATEWRIGHT_MANAGEMENT_KEY=(\S+)$", text, re.M)
    return (api.group(1) if api else None), (management.group(1) if management else None)


def read_operator_key(data_dir: Path) -> str | None:
    """The operator key a first start (or the first start after an upgrade) wrote, if any."""
    for name in (KEYS_FILE, OPERATOR_KEY_FILE):
        path = data_dir / name
        if path.exists():
            found = re.search(r"^GATEWRIGHT_OPERATOR_KEY=(\S+)$", path.read_text(), re.M)
            if found:
                return found.group(1)
    return None


def _new_keys(settings: Settings, api_key: str | None, management_key: str | None, operator_key: str) -> list[str]:
    """What the first start says about its keys: the keys on a terminal, else where they are."""
    made = "A new store: created an account with starting credits, its keys," if api_key else "An upgraded store:"
    if sys.stdout.isatty():
        lines = [
            f"{made} and the operator's key. They are shown only now (the store keeps hashes);",
            "copy them somewhere safe.",
        ]
        if api_key and management_key:
            lines += [
                f"  API key (calls models):                      {api_key}",
                f"  management key (the account's keys, billing): {management_key}",
            ]
        return [*lines, f"  operator key (accounts, credits, codes):     {operator_key}", ""]
    path = write_first_start_keys(settings.data_dir, api_key, management_key, operator_key)
    return [
        f"{made} and the operator's key.",
        "Standard output is not a terminal, so the keys are not printed here: they were written once",
        f"to {path} (readable by this user only). Move them somewhere safe and delete the file.",
        "",
    ]


def _exposure_warning(settings: Settings) -> str | None:
    """A bare gateway (no keys) reachable from other machines serves anyone who finds it."""
    if settings.platform:
        return None
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"WARNING: --bare on {settings.host}: no keys, no billing, no limits, and the address is not loopback.\n"
        "WARNING: anyone who can reach this port can call every model on your account and upstream keys.\n"
        "WARNING: bind to 127.0.0.1 or put an authenticating proxy in front."
    )


def _banner(
    settings: Settings, api_key: str | None, management_key: str | None, operator_key: str | None = None
) -> str:
    base = f"http://{settings.host}:{settings.port}"
    key = (api_key if sys.stdout.isatty() else None) or "$GATEWRIGHT_API_KEY"
    lines = [""]
    if operator_key:
        lines += _new_keys(settings, api_key, management_key, operator_key)
    if settings.platform and not api_key:
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
    from gatewright.wiring import bootstrap, ensure_operator_key, load_catalog

    try:  # before anything is created: a bad catalog is reported as where and why, not a traceback
        model_catalog = load_catalog(settings)
    except CatalogError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    from gatewright.app import create_app

    where = f"store {shown_url(settings.db_url)}, rate limits {'in Redis' if settings.redis_url else 'in process'}"
    logging.getLogger("gatewright").info("%s, %d worker(s)", where, settings.workers)

    api_key = management_key = operator_key = None
    if settings.platform:
        try:
            first = asyncio.run(bootstrap(settings))
        except Exception as error:  # unreachable store, bad credentials: one line, not a traceback
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            typer.echo(f"error: the store {shown_url(settings.db_url)} cannot be opened: {reason}", err=True)
            raise typer.Exit(1) from None
        if first is not None:
            api_key, management_key, operator_key = first.api_key.key, first.management_key.key, first.operator_key
        else:
            operator_key = asyncio.run(ensure_operator_key(settings))
    server = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=CorkedHttpToolsProtocol,  # uvicorn's httptools protocol, one write a loop turn
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through gatewright's handler (text or JSON)
        timeout_keep_alive=settings.keep_alive_seconds,
        access_log=False,  # gatewright logs its own access line, with the request id
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    warning = _exposure_warning(settings)
    if warning:
        typer.echo(warning, err=True)
    banner = _banner(settings, api_key, management_key, operator_key)
    if settings.workers == 1:
        app = create_app(settings, catalog=model_catalog, serving=True)
        typer.echo(banner)
        with multiprocess_metrics(needed=False):  # only an operator's PROMETHEUS_MULTIPROC_DIR, emptied
            uvicorn.run(app, **server)  # type: ignore[arg-type]
        return
    # Several processes: each builds its app from the environment (the settings travel there).
    for name, value in overrides.items():
        os.environ[f"GATEWRIGHT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    typer.echo(banner)
    with multiprocess_metrics():
        uvicorn.run("gatewright.app:create_app_from_env", factory=True, workers=settings.workers, **server)  # type: ignore[arg-type]


@contextlib.contextmanager
def multiprocess_metrics(needed: bool = True) -> Iterator[str | None]:
    """Workers count into files in one directory that every scrape adds up (prometheus-client's
    multiprocess mode). The operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (emptied first: an
    earlier run's counts must not be added to this one's); otherwise, when ``needed``, a fresh
    temporary directory, removed at the end."""
    from gatewright.core.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    if not given and not needed:
        yield None
        return
    path = given or tempfile.mkdtemp(prefix="gatewright-metrics-")
    # One process serving: this one, which counts there already (its metrics were made at import).
    prepare_multiprocess_dir(path, keep=None if needed else os.getpid())
    os.environ[MULTIPROC_ENV] = path  # before the workers start (and import prometheus_client)
    try:
        yield path
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)
