"""``herald emit``: send one event to the server (the CLI twin of ``emit_event``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._errors import fail, handle_errors
from cli._parsing import parse_json, parse_labels, parse_time
from cli._state import state


@handle_errors
def emit(
    ctx: typer.Context,
    event: Annotated[str, typer.Argument(help="event name, e.g. app.order.shipped")],
    resource_id: Annotated[str, typer.Option("--resource-id", help="prefect.resource.id")],
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", metavar="<k=v>", help="resource label k=v (repeatable)"),
    ] = None,
    related: Annotated[
        str | None,
        typer.Option("--related", help="JSON list of related resources (each with a role)"),
    ] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="JSON object")] = None,
    occurred: Annotated[
        str | None, typer.Option("--occurred", help="ISO time (naive = UTC) or 5m for 5 min ago")
    ] = None,
) -> None:
    """Emit one event and print its id once it is committed.

    Example: herald emit app.order.shipped --resource-id app.order.8812 --resource region=eu
    --payload '{"carrier": "DHL"}'
    """
    from datetime import UTC, datetime

    from collector.domain.events import format_time
    from collector.domain.ids import uuid7_str

    labels = {"prefect.resource.id": resource_id, **parse_labels(resource or [], "--resource")}
    item = {
        "event": event,
        "resource": labels,
        "related": parse_json(related, "--related", list) or [],
        "payload": parse_json(payload, "--payload", dict) or {},
        "id": uuid7_str(),
    }
    item["occurred"] = format_time(
        parse_time(occurred, "--occurred") if occurred else datetime.now(UTC)
    )
    with state(ctx).client() as client:
        _, errors = client.emit([item])
    if errors:
        raise fail(f"event rejected: {errors[0][1]}")
    typer.echo(item["id"])
