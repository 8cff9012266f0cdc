"""``herald serve``: load config, run the server, print one readiness line, drain on signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli._errors import handle_errors


def _setup_logging(level: str, fmt: str) -> None:
    if fmt == "json":
        form = (
            '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        )
    else:
        form = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=form, stream=sys.stderr)


async def _run(config: Any) -> None:
    from collector.app import Herald

    herald = Herald(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await herald.start()
    try:
        # The one readiness line (stderr) that scripts and tests wait for.
        print(
            f"herald listening grpc={herald.grpc_address} http={herald.http_address} "
            f"version={herald.version} db={config.storage.path}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        print("herald: shutting down (draining queued events)", file=sys.stderr, flush=True)
    finally:
        await herald.stop()


@handle_errors
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="HERALD_CONFIG", metavar="<file>", help="TOML config file"),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", metavar="<file>", help="DuckDB file (storage.path)")
    ] = None,
    grpc: Annotated[
        str | None,
        typer.Option("--grpc", metavar="<host:port>", help="gRPC listen host:port (OTLP + native)"),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option("--http", metavar="<host:port>", help="HTTP listen host:port (OTLP + native)"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow a non-loopback bind without auth tokens")
    ] = False,
) -> None:
    """Run the Herald server: OTLP and native receivers, the store and background jobs.

    Example: herald serve --db events.duckdb --grpc 127.0.0.1:4317 --http 127.0.0.1:4318
    """
    from collector.config import load_config

    server: dict[str, Any] = {}
    if grpc:
        server["grpc"] = grpc
    if http:
        server["http"] = http
    if insecure:
        server["insecure"] = True
    cfg = load_config(config, overrides={"server": server, "storage": {"path": db} if db else {}})
    _setup_logging(cfg.logging.level, cfg.logging.format)
    asyncio.run(_run(cfg))
