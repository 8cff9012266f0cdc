"""The root ``herald`` Typer app: global options and the command tree (the only add_typer calls)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import automations, events, store
from cli._app import HeraldTyper
from cli._state import CliState
from cli.emit import emit
from cli.serve import serve
from cli.sql import sql
from cli.status import status
from cli.trace import trace

app = HeraldTyper(
    help="Herald: an OpenTelemetry-compatible event collector — events, feed, SQL, automations.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish, PowerShell (docs/cli.md).
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        # The same version `herald serve` prints in its readiness line and /readyz answers.
        from collector.version import herald_version

        typer.echo(f"herald {herald_version()}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", envvar="HERALD_ADDRESS", metavar="<host:port>", help="server gRPC address"
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="HERALD_TOKEN", metavar="<token>", help="bearer token"),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print Herald's version and exit"
        ),
    ] = False,
) -> None:
    """Global options apply to every command that talks to a server."""
    ctx.obj = CliState(address=address, token=token)


app.command()(serve)
app.command()(emit)
app.add_typer(events.app, name="events")
app.add_typer(automations.app, name="automations")
app.add_typer(store.app, name="store")
app.command()(sql)
app.command()(status)
app.command()(trace)


def main() -> None:
    app()
