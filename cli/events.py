"""`herald events ls|show|tail|count`: the event feed in the terminal."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from cli._app import HeraldTyper
from cli._errors import handle_errors
from cli._filters import (
    EventOpt,
    FilterJsonOpt,
    LabelOpt,
    RelatedOpt,
    ResourceOpt,
    SinceOpt,
    TextOpt,
    UntilOpt,
    build_filter,
)
from cli._output import OutputFormat, note, render, resolve_format
from cli._readers import DbOpt, reader
from cli._state import state

app = HeraldTyper(help="Explore events: list, show, tail and count.", no_args_is_help=True)

FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option("--format", "-f", help="table (default on a terminal) | json | jsonl | csv"),
]


def local_time(iso: str | None) -> str:
    """An event time in the local zone, ISO form, to the millisecond."""
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone().isoformat(timespec="milliseconds")


def display_name(labels: dict[str, str]) -> str:
    """Prefect's display-name fallback: name, prefect.name, prefect-cloud.name, last id part."""
    for key in ("prefect.resource.name", "prefect.name", "prefect-cloud.name"):
        if labels.get(key):
            return labels[key]
    return labels.get("prefect.resource.id", "").rsplit(".", 1)[-1]


def readable(event: dict[str, Any]) -> str:
    """The name as the feed shows it: the event name and what it happened to."""
    return f"{event['event']}  ({display_name(event['resource'])})"


def related_summary(event: dict[str, Any]) -> str:
    return ", ".join(
        f"{r.get('prefect.resource.role')}: {display_name(r)}" for r in event.get("related", [])
    )


def _rows(events: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            local_time(e["occurred"]),
            readable(e),
            e["resource"]["prefect.resource.id"],
            related_summary(e),
            e["id"],
        ]
        for e in events
    ]


_TABLE_COLUMNS = ["occurred", "event", "resource", "related", "id"]


@app.command("ls")
@handle_errors
def ls(
    ctx: typer.Context,
    event: EventOpt = None,
    resource: ResourceOpt = None,
    related: RelatedOpt = None,
    label: LabelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    text: TextOpt = None,
    filter_json: FilterJsonOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="events to show", min=1)] = 50,
    order: Annotated[str, typer.Option("--order", help="desc (newest first) | asc")] = "desc",
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """List events matching the filters, newest first.

    Example: herald events ls --event 'otel.span.*' --label service.name=checkout --since 1h
    """
    if order.lower() not in ("asc", "desc"):
        raise typer.BadParameter("must be asc or desc", param_hint="--order")
    filter = build_filter(event, resource, related, label, since, until, text, filter_json, order)
    events: list[dict[str, Any]] = []
    total = 0
    with reader(ctx, db) as source:
        page = source.query(filter, min(limit, 1000))
        total = page["total"]
        events.extend(page["events"])
        while page["next_page"] and len(events) < limit:
            page = source.query(None, None, page["next_page"])
            events.extend(page["events"])
    events = events[:limit]
    fmt = resolve_format(fmt)
    render(
        events,
        fmt,
        columns=_TABLE_COLUMNS
        if fmt is OutputFormat.TABLE
        else ["occurred", "event", "resource", "related", "payload", "id", "follows", "received"],
        table_rows=_rows(events) if fmt is OutputFormat.TABLE else None,
    )
    if fmt is OutputFormat.TABLE:
        note(f"{len(events)} of {total} matching events")


@app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="the event id")],
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """Show one event: its resource, related resources and payload.

    Example: herald events show 0193a1b2-…
    """
    with reader(ctx, db) as source:
        event = source.get(event_id)
    fmt = resolve_format(fmt)
    if fmt is not OutputFormat.TABLE:
        render([event], fmt)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{event['event']}[/bold]  {local_time(event['occurred'])}")
    console.print(f"id {event['id']}   received {local_time(event.get('received'))}")
    if event.get("follows"):
        console.print(f"follows {event['follows']}")
    resource = Table(title="Resource", show_header=False)
    for k, v in event["resource"].items():
        resource.add_row(k, v)
    console.print(resource)
    if event["related"]:
        related = Table(title="Related resources")
        for col in ("role", "id", "labels"):
            related.add_column(col)
        for r in event["related"]:
            rest = {
                k: v
                for k, v in r.items()
                if k not in ("prefect.resource.role", "prefect.resource.id")
            }
            related.add_row(
                r["prefect.resource.role"],
                r["prefect.resource.id"],
                json.dumps(rest) if rest else "",
            )
        console.print(related)
    console.print("Payload:")
    console.print_json(json.dumps(event["payload"]))
    console.print(
        f"\nAutomate on it:  herald automations create --from-event {event['id']} --name …"
    )


@app.command("tail")
@handle_errors
def tail(
    ctx: typer.Context,
    event: EventOpt = None,
    resource: ResourceOpt = None,
    related: RelatedOpt = None,
    label: LabelOpt = None,
    text: TextOpt = None,
    filter_json: FilterJsonOpt = None,
    no_backfill: Annotated[
        bool, typer.Option("--no-backfill", help="only new events, no recent ones first")
    ] = False,
    backfill: Annotated[int, typer.Option("--backfill", help="recent events first", min=1)] = 20,
    count: Annotated[
        int | None, typer.Option("--count", help="stop after this many events", min=1)
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Follow new events as they are committed (Ctrl-C to stop).

    Example: herald events tail --event 'otel.span.error' --related trace=otel.trace.4bf9…
    """
    filter = build_filter(event, resource, related, label, None, None, text, filter_json)
    fmt = resolve_format(fmt)
    seen = 0
    with state(ctx).client() as client:
        stream = client.tail(filter, backfill=not no_backfill, backfill_limit=backfill)
        try:
            for kind, item in stream:
                if kind == "lagged":
                    note(f"herald: this tail fell behind; {item} events were skipped")
                    continue
                if fmt is OutputFormat.TABLE:
                    typer.echo(
                        f"{local_time(item['occurred'])}  {readable(item)}  "
                        f"{item['resource']['prefect.resource.id']}"
                    )
                else:
                    typer.echo(json.dumps(item, default=str))
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


def _bars(counts: list[dict[str, Any]]) -> None:
    from rich.console import Console

    console = Console()
    top = max((c["count"] for c in counts), default=0) or 1
    width = max(10, console.width - 40)
    for c in counts:
        bar = "█" * round(c["count"] / top * width)
        console.print(f"{local_time(c['start_time'])[:19]}  {c['count']:>8}  [cyan]{bar}[/cyan]")


@app.command("count")
@handle_errors
def count(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by", help="event | resource | time")] = "event",
    unit: Annotated[
        str, typer.Option("--unit", help="time buckets: week | day | hour | minute | second")
    ] = "hour",
    interval: Annotated[float, typer.Option("--interval", help="units per bucket (≥ 0.01)")] = 1.0,
    event: EventOpt = None,
    resource: ResourceOpt = None,
    related: RelatedOpt = None,
    label: LabelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    text: TextOpt = None,
    filter_json: FilterJsonOpt = None,
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """Count matching events by event name, resource, or time (drawn as a bar chart).

    Example: herald events count --by time --unit hour --since 1d --event 'otel.span.*'
    """
    if by not in ("event", "resource", "time"):
        raise typer.BadParameter("must be event, resource or time", param_hint="--by")
    if by == "time" and not since and not filter_json:
        since = "1d"  # the full 180-day default would be too many hour buckets
    filter = build_filter(event, resource, related, label, since, until, text, filter_json)
    with reader(ctx, db) as source:
        counts = source.count(filter, by, unit, interval)
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.TABLE and by == "time":
        _bars(counts)
        return
    render(
        counts,
        fmt,
        columns=["label", "count", "start_time", "end_time"] if fmt is OutputFormat.TABLE else None,
    )
