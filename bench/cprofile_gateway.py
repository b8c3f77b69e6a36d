"""gatewright under cProfile with a CPU clock, for a profile that a busy machine cannot skew.

py-spy samples wall-clock time: on a saturated machine a process that wakes another one (a socket
write to the upstream) is often preempted right there, and those frames look hot. This runner serves
the same app as ``gatewright serve`` (settings from ``GATEWRIGHT_*``; ``--bare`` for no platform) in one
process with ``cProfile.Profile(time.thread_time)``: only CPU the event-loop thread really spent is
counted. cProfile's per-call cost inflates call-heavy pure-Python code, so read the ranking, not the
absolute times; its cumulative times are meaningless for coroutines, so only self time is used.
SIGUSR1 starts profiling, SIGUSR2 stops it; stats are written on SIGTERM/SIGINT.

    GATEWRIGHT_CATALOG=catalog.toml python -m bench.cprofile_gateway --out gw.pstats [--bare]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import signal
import time

import uvicorn

from gatewright.app import create_app
from gatewright.cli.http_protocol import CorkedHttpToolsProtocol
from gatewright.cli.serve import write_first_start_keys
from gatewright.settings import Settings
from gatewright.wiring import bootstrap


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--bare", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings(platform=not args.bare)
    # As `gatewright serve` sets it up, so the access log costs what it costs there.
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.platform:
        first = asyncio.run(bootstrap(settings))
        if first is not None:  # where `gatewright serve` writes them, so bench.procs finds the key
            write_first_start_keys(settings.data_dir, first.api_key.key, first.management_key.key)
    app = create_app(settings, serving=True)  # as `gatewright serve` builds it
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http=CorkedHttpToolsProtocol,
            log_level=settings.log_level,
            access_log=False,
        )
    )
    # uvicorn re-raises the signal that stopped it once it is done; with the default handler that
    # would kill the process before the stats are written.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # Profile only the window the harness asks for (SIGUSR1 … SIGUSR2), not start-up and warm-up.
    profile = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
    try:
        server.run()
    finally:
        profile.disable()
        profile.dump_stats(args.out)


if __name__ == "__main__":
    main()
