"""The root ``herald`` Typer app: global options and the command tree (the only add_typer calls)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import automations, events
from cli._state import CliState
from cli.emit import emit
from cli.serve import serve
from cli.sql import sql

app = typer.Typer(
    help="Herald: an OpenTelemetry-compatible event collector — events, feed, SQL, automations.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option("--address", envvar="HERALD_ADDRESS", help="server gRPC host:port"),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="HERALD_TOKEN", help="bearer token")
    ] = None,
) -> None:
    """Global options apply to every command that talks to a server."""
    ctx.obj = CliState(address=address, token=token)


app.command()(serve)
app.command()(emit)
app.add_typer(events.app, name="events")
app.add_typer(automations.app, name="automations")
app.command()(sql)


def main() -> None:
    app()
