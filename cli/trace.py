"""`herald trace <trace-id>`: one trace as a span tree in the terminal — each span with its
service, start, duration, status and a waterfall bar, its span events and logs beneath it.

The trace comes from ``HeraldReader.trace`` (a server, or a store file with ``--db``). Machine
formats print the reader's answer: ``json`` the whole trace object, ``jsonl`` the same on one
line, ``csv`` one row per span.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._errors import handle_errors
from cli._output import FormatOpt, OutputFormat, console, render, resolve_format, shown
from cli._progress import waiting
from cli._readers import DbOpt, reader
from collector.domain.otel_ids import parse_trace_id
from collector.domain.traces import format_ms, tree_guides

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.text import Text

    from collector.domain.traces import SpanJson, TraceJson, TraceLogJson

# Characters of the waterfall column (the whole trace's duration): what the terminal leaves
# after the other columns, within these bounds.
MIN_BAR, MAX_BAR = 12, 48
CSV_COLUMNS = [
    "span_id",
    "parent_span_id",
    "depth",
    "service",
    "name",
    "kind",
    "start_time",
    "offset_ms",
    "duration_ms",
    "status",
    "status_message",
    "events",
]
_STATUS_STYLE = {"error": "bold red", "ok": "green", "unset": "cyan"}


def _bar(
    offset: float | None, duration: float | None, total: float | None, style: str, width: int
) -> Text:
    from rich.text import Text

    if offset is None or not total or total <= 0:
        return Text("")
    start = min(width - 1, max(0, int(offset / total * width)))
    length = max(1, round((duration or 0) / total * width))
    length = min(length, width - start)
    return Text.assemble(" " * start, ("█" * length, style))


def _marker(offset: float | None, total: float | None, style: str, width: int) -> Text:
    from rich.text import Text

    if offset is None or not total or total <= 0:
        return Text("")
    at = min(width - 1, max(0, int(offset / total * width)))
    return Text.assemble(" " * at, ("◆", style))


def _log_text(log: TraceLogJson) -> str:
    body = log["body"]
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    severity = log["severity_text"] or log["event"] or "log"
    return f"{severity}: {text}"


def print_tree(trace: TraceJson) -> None:
    """The trace as a table: tree-indented spans, then each span's events and logs."""
    from rich.table import Table
    from rich.text import Text

    spans: list[SpanJson] = trace["spans"]
    total = trace["duration_ms"]
    logs_by_span: dict[str | None, list[TraceLogJson]] = {}
    for log in trace["logs"]:
        logs_by_span.setdefault(log["span_id"], []).append(log)
    known = {s["span_id"] for s in spans}
    errors = trace["error_count"]
    title = (
        f"trace {trace['trace_id']} · {trace['span_count']} spans · "
        f"{len(trace['services'])} services · {format_ms(total)}"
        + (f" · {errors} error{'s' if errors != 1 else ''}" if errors else "")
    )
    table = Table(title=Text(title), title_justify="left", show_lines=False, expand=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("span", "left"),
        ("service", "left"),
        ("start", "right"),
        ("duration", "right"),
        ("status", "left"),
        ("waterfall", "left"),
    ]
    out = console()
    bar = max(MIN_BAR, min(MAX_BAR, out.width - 80))
    for column, justify in columns:
        if column == "waterfall":  # drawn to its width: never wrapped
            table.add_column(column, no_wrap=True, overflow="crop", min_width=bar)
        elif column == "span":
            table.add_column(column, overflow="fold", min_width=16)
        elif column == "service":
            table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=20)
        elif column == "status":
            table.add_column(column, overflow="fold", min_width=6)
        else:
            table.add_column(column, justify=justify, no_wrap=True)
    depths = [s["depth"] for s in spans]
    prefixes = tree_guides(depths)
    for i, (span, prefix) in enumerate(zip(spans, prefixes, strict=True)):
        code = span["status"]["code"]
        style = _STATUS_STYLE.get(code, "")
        status = Text(code, style=style)
        if span["status"]["message"]:
            status.append(f" {shown(span['status']['message'])}")
        name = Text(prefix, style="dim")
        name.append(shown(span["name"]) or "(unnamed)", style="bold" if span["depth"] == 0 else "")
        if span["parent_missing"]:
            name.append(" (parent not stored)", style="dim italic")
        table.add_row(
            name,
            Text(shown(span["service"])),
            Text(format_ms(span["offset_ms"])),
            Text(format_ms(span["duration_ms"])),
            status,
            _bar(span["offset_ms"], span["duration_ms"], total, style or "white", bar),
        )
        # Span events and logs, in time order, beneath their span (and above its children,
        # whose guide they continue).
        has_children = i + 1 < len(spans) and depths[i + 1] > depths[i]
        inner = prefix.replace("├─ ", "│  ").replace("└─ ", "   ")
        inner += "│  " if has_children else "   "
        items: list[tuple[str, float | None, Text, str]] = [
            (e["time"], e["offset_ms"], Text(f"• {shown(e['name'])}"), "yellow")
            for e in span["events"]
        ]
        for log in logs_by_span.get(span["span_id"], []):
            severity = (log["severity_number"] or 0) >= 17  # ERROR and FATAL
            items.append(
                (
                    log["time"],
                    log["offset_ms"],
                    Text(f"▸ {shown(_log_text(log))}"),
                    "red" if severity else "blue",
                )
            )
        for _, offset, text, mark in sorted(items, key=lambda item: item[0]):
            label = Text(inner, style="dim")
            label.append_text(text)
            label.stylize("dim", 0, len(label))
            at = Text(format_ms(offset), style="dim")
            table.add_row(label, "", at, "", "", _marker(offset, total, mark, bar))
    out.print(table)
    orphan_logs = [
        log for span_id, logs in logs_by_span.items() if span_id not in known for log in logs
    ]
    if orphan_logs:
        out.print(Text("Logs outside the stored spans:", style="bold"))
        for log in orphan_logs:
            out.print(Text(f"  {format_ms(log['offset_ms'])}  {shown(_log_text(log))}"))
    if trace["other_events"]:
        out.print(Text(f"{len(trace['other_events'])} other event(s) of the trace:", style="bold"))
        for event in trace["other_events"]:
            out.print(Text(f"  {shown(event['event'])}  {shown(event['id'])}"))
    if trace["truncated"]:
        out.print(
            Text(
                f"Only the first {trace['event_count']} events of the trace were read.",
                style="yellow",
            )
        )


def _span_rows(trace: TraceJson) -> list[dict[str, Any]]:
    return [
        {
            "span_id": s["span_id"],
            "parent_span_id": s["parent_span_id"],
            "depth": s["depth"],
            "service": s["service"],
            "name": s["name"],
            "kind": s["kind"],
            "start_time": s["start_time"],
            "offset_ms": s["offset_ms"],
            "duration_ms": s["duration_ms"],
            "status": s["status"]["code"],
            "status_message": s["status"]["message"],
            "events": len(s["events"]),
        }
        for s in trace["spans"]
    ]


@handle_errors
def trace(
    ctx: typer.Context,
    trace_id: Annotated[
        str, typer.Argument(metavar="<trace-id>", help="32 hex digits (or otel.trace.<hex>)")
    ],
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """Show one trace: its spans as a tree with durations and status, span events and logs.

    Example: herald trace 4bf92f3577b34da6a3ce929d0e0e4736
    """
    trace_id = parse_trace_id(trace_id)  # a clear error before any connection is made
    with reader(ctx, db) as source, waiting("reading the trace…"):
        found = source.trace(trace_id)
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.JSON:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False))
    elif fmt is OutputFormat.JSONL:
        typer.echo(json.dumps(found, ensure_ascii=False))
    elif fmt is OutputFormat.CSV:
        render(_span_rows(found), fmt, columns=CSV_COLUMNS)
    else:
        print_tree(found)
