"""`herald events ls|show|tail|count`: the event feed in the terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

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
from cli._output import FormatOpt, OutputFormat, console, note, render, resolve_format, shown
from cli._progress import waiting
from cli._readers import DbOpt, reader
from cli._state import state

if TYPE_CHECKING:
    from collector.client.interface import CountRow

app = HeraldTyper(help="Explore events: list, show, tail and count.", no_args_is_help=True)


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
            shown(readable(e)),
            shown(e["resource"]["prefect.resource.id"]),
            shown(related_summary(e)),
            shown(e["id"]),
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
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="<n>", help="events to show", min=1)
    ] = 50,
    order: Annotated[
        str, typer.Option("--order", metavar="<desc|asc>", help="desc (newest first) | asc")
    ] = "desc",
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """List events matching the filters, newest first.

    Example: herald events ls --event 'otel.span.*' --label service.name=checkout --since 1h
    """
    if order.lower() not in ("asc", "desc"):
        raise typer.BadParameter("must be asc or desc", param_hint="--order")
    filter = build_filter(event, resource, related, label, since, until, text, filter_json, order)
    with reader(ctx, db) as source, waiting("reading events…"):
        events, total, lower_bound = source.listing(filter, limit)
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
        # A text search's total may be a lower bound (query.text_total_limit): "1000+".
        note(f"{len(events)} of {total}{'+' if lower_bound else ''} matching events")


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
    with reader(ctx, db) as source, waiting("reading the event…"):
        event = source.get(event_id)
    fmt = resolve_format(fmt)
    if fmt is not OutputFormat.TABLE:
        render([event], fmt)
        return
    from rich.highlighter import JSONHighlighter
    from rich.table import Table
    from rich.text import Text

    # Stored text is shown as Text (never parsed as rich markup), control characters escaped.
    out = console()
    out.print(Text.assemble((shown(event["event"]), "bold"), f"  {local_time(event['occurred'])}"))
    out.print(Text(f"id {shown(event['id'])}   received {local_time(event.get('received'))}"))
    if event.get("follows"):
        out.print(Text(f"follows {shown(event['follows'])}"))
    resource = Table(title="Resource", show_header=False)
    for k, v in event["resource"].items():
        resource.add_row(Text(shown(k)), Text(shown(v)))
    out.print(resource)
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
                Text(shown(r["prefect.resource.role"])),
                Text(shown(r["prefect.resource.id"])),
                Text(shown(json.dumps(rest, ensure_ascii=False)) if rest else ""),
            )
        out.print(related)
    out.print("Payload:")
    # json.dumps escapes C0 controls; shown() the rest (C1, bidi overrides) that it keeps.
    payload = shown_lines(json.dumps(event["payload"], indent=2, ensure_ascii=False))
    out.print(JSONHighlighter()(Text(payload)))
    out.print(
        Text(
            "\nAutomate on it:  herald automations create --from-event "
            f"{shown(event['id'])} --name …"
        )
    )


def shown_lines(text: str) -> str:
    """``shown`` line by line: the text's own line breaks stay."""
    return "\n".join(shown(line) for line in text.split("\n"))


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
                        f"{local_time(item['occurred'])}  {shown(readable(item))}  "
                        f"{shown(item['resource']['prefect.resource.id'])}"
                    )
                else:
                    typer.echo(json.dumps(item, default=str))
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


def _bars(counts: list[CountRow]) -> None:
    out = console()
    top = max((c["count"] for c in counts), default=0) or 1
    width = max(10, out.width - 40)
    for c in counts:
        bar = "█" * round(c["count"] / top * width)
        out.print(f"{local_time(c['start_time'])[:19]}  {c['count']:>8}  [cyan]{bar}[/cyan]")


# Buckets drawn when `--by time` has no `--since`: enough to see a shape, few enough to fit a
# terminal, and always within the server's 1,000-bucket limit (1 day of hours, as before).
_DEFAULT_BUCKETS = {"week": 12, "day": 30, "hour": 24, "minute": 60, "second": 60}
_UNIT_SECONDS = {"week": 604_800, "day": 86_400, "hour": 3_600, "minute": 60, "second": 1}


def default_span(unit: str, interval: float) -> timedelta | None:
    """How far back ``--by time`` counts without ``--since``: a fixed number of buckets of
    the requested size. None for a unit the server will reject anyway."""
    unit = unit.lower()
    if unit not in _UNIT_SECONDS or not interval > 0:
        return None
    return timedelta(seconds=_DEFAULT_BUCKETS[unit] * interval * _UNIT_SECONDS[unit])


def _since_in(filter_json: str | None) -> bool:
    from cli._parsing import parse_json

    data = parse_json(filter_json, "--filter-json", dict) or {}
    occurred = data.get("occurred")
    return isinstance(occurred, dict) and occurred.get("since") is not None


@app.command("count")
@handle_errors
def count(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", metavar="<event|resource|time>", help="what to count by")
    ] = "event",
    unit: Annotated[
        str,
        typer.Option(
            "--unit",
            metavar="<unit>",
            help="time buckets: week | day | hour | minute | second",
        ),
    ] = "hour",
    interval: Annotated[
        float, typer.Option("--interval", metavar="<units>", help="units per bucket (≥ 0.01)")
    ] = 1.0,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            "-n",
            metavar="<n>",
            min=0,
            help="--by event|resource: the N largest groups; 0 for all of them",
        ),
    ] = 20,
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

    By event or resource: the largest groups first, the top 20 unless --limit says otherwise.
    By time without --since: the last 60 buckets for minutes and seconds, 24 for hours, 30 for
    days, 12 for weeks (times --interval).

    Example: herald events count --by time --unit hour --since 1d --event 'otel.span.*'
    """
    from cli._parsing import parse_time
    from collector.domain.events import format_time

    if by not in ("event", "resource", "time"):
        raise typer.BadParameter("must be event, resource or time", param_hint="--by")
    fmt = resolve_format(fmt)
    if by == "time" and not since and not _since_in(filter_json):
        # The 180-day default range would be too many buckets for any unit below a day.
        span = default_span(unit, interval)
        if span is not None:
            end = parse_time(until, "--until") if until else datetime.now(UTC)
            since = format_time(end - span)
            if fmt is OutputFormat.TABLE:
                n = _DEFAULT_BUCKETS[unit.lower()] * interval
                note(
                    f"herald: counting the {n:g} {unit.lower()}s before "
                    f"{'--until' if until else 'now'} (--since for another range)"
                )
    filter = build_filter(event, resource, related, label, since, until, text, filter_json)
    cut = limit if by != "time" else 0
    with reader(ctx, db) as source, waiting("counting events…"):
        counts, groups = source.count_groups(filter, by, unit, interval, cut)
    if fmt is OutputFormat.TABLE and by == "time":
        _bars(counts)
        return
    render(
        counts,
        fmt,
        columns=["label", "count", "start_time", "end_time"] if fmt is OutputFormat.TABLE else None,
    )
    if groups > len(counts):
        left = groups - len(counts)
        kinds = "event names" if by == "event" else "resources"
        note(
            f"herald: the top {len(counts):,} of {groups:,} {kinds}; {left:,} more left out "
            "(--limit N, or --limit 0 for all)"
        )
