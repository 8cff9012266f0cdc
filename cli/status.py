"""``herald status``: a running server's readiness and self-metrics, summed up for a human
(or as one JSON object with ``--format json``). Read over HTTP from ``/readyz`` and
``/metrics`` (``collector/client/status.py``); exits 4 when the server is up but not ready."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._errors import handle_errors
from cli._output import format_option, shown
from cli._state import state

if TYPE_CHECKING:
    from collector.client.status import ServerStatus

NOT_READY_EXIT = 4  # as a busy server: up, try again later


class StatusFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@handle_errors
def status(
    ctx: typer.Context,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            envvar="HERALD_HTTP_ADDRESS",
            metavar="<host:port>",
            help="the server's HTTP address (default 127.0.0.1:4318), or an http(s):// URL",
        ),
    ] = None,
    fmt: Annotated[StatusFormat, format_option("text (default) | json")] = StatusFormat.TEXT,
) -> None:
    """Show whether the server is ready and what it has done since it started.

    Ingest per signal, rejections, busy answers, queue, commits, upkeep, live tail, SQL,
    automations. Reads /readyz and /metrics on the HTTP port (the token needs the read
    scope). Exit code 4 when the server answers but is not ready (starting, draining, a part
    stopped).

    Example: herald status --http 127.0.0.1:4318
    """
    from collector.client.status import read_status

    found = read_status(http, state(ctx).token)
    summary = summarize(found)
    if fmt is StatusFormat.JSON:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(as_text(summary))
    if not found.ready:
        raise typer.Exit(NOT_READY_EXIT)


def _quantile_bound(found: ServerStatus, name: str, q: float) -> float | None:
    """The smallest histogram bucket bound holding at least ``q`` of the observations."""
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (n, labels), value in found.samples.items()
        if n == f"{name}_bucket"
    )
    count = found.value(f"{name}_count")
    if not count:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return bound
    return None


def _histogram(found: ServerStatus, name: str) -> dict[str, Any]:
    count = found.value(f"{name}_count")
    total = found.value(f"{name}_sum")
    return {
        "count": int(count),
        "mean": total / count if count else None,
        "p99_at_most": _quantile_bound(found, name, 0.99),
    }


def _counts(found: ServerStatus, name: str, label: str) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(found.by_label(name, label).items()) if v}


def summarize(found: ServerStatus) -> dict[str, Any]:
    """The numbers ``herald status`` shows, as one JSON-able object."""
    v = found.value
    started = v("process_start_time_seconds")
    signals = {}
    for signal in ("events", "spans", "logs", "metrics"):
        rejected = found.by_label("herald_items_rejected_total", "reason", signal=signal)
        signals[signal] = {
            "received": int(v("herald_items_received_total", signal=signal)),
            "stored": int(v("herald_items_stored_total", signal=signal)),
            "rejected": {reason: int(n) for reason, n in sorted(rejected.items()) if n},
        }
    readiness = found.readiness
    return {
        "url": found.url,
        "version": readiness.get("version"),
        "ready": found.ready,
        "reason": readiness.get("reason"),
        "checks": readiness.get("checks", {}),
        "uptime_seconds": round(time.time() - started, 1) if started else None,
        "resident_bytes": int(v("process_resident_memory_bytes")) or None,
        "ingest": signals,
        "events_inserted": int(v("herald_events_inserted_total")),
        "dedupe_hits": int(v("herald_dedupe_hits_total")),
        "busy_answers": _counts(found, "herald_busy_answers_total", "reason"),
        "queue": {
            "events": int(v("herald_ingest_queue_events")),
            "bytes": int(v("herald_ingest_queue_bytes")),
            "grpc_calls": int(v("herald_grpc_calls_in_flight")),
            "grpc_bytes": int(v("herald_grpc_inflight_bytes")),
        },
        "group_commits": {
            "events": _histogram(found, "herald_group_commit_events"),
            "seconds": _histogram(found, "herald_group_commit_seconds"),
        },
        "checkpoints": _counts(found, "herald_checkpoints_total", "outcome"),
        "retention": {
            "runs": _counts(found, "herald_retention_runs_total", "outcome"),
            "deleted_events": int(v("herald_retention_deleted_events_total")),
        },
        "tail_subscribers": int(v("herald_tail_subscribers")),
        "sql_queries": _counts(found, "herald_sql_queries_total", "outcome"),
        "automations": {
            "firings": int(v("herald_automation_firings_total")),
            "actions": _counts(found, "herald_automation_actions_total", "status"),
            "webhooks": _histogram(found, "herald_webhook_request_seconds"),
            "webhook_outcomes": _counts(found, "herald_webhook_request_seconds_count", "outcome"),
        },
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s:02d}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _listing(counts: dict[str, int], none: str = "none") -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or none


def as_text(s: dict[str, Any]) -> str:
    """The human summary: a header line, then one line per area."""
    head = f"herald {shown(s['version'])} at {s['url']}: "
    if s["ready"]:
        head += "ready"
    else:
        head += f"NOT READY ({shown(s['reason'])})"
    extra = []
    if s["uptime_seconds"] is not None:
        extra.append(f"up {_duration(s['uptime_seconds'])}")
    if s["resident_bytes"]:
        extra.append(f"{_size(s['resident_bytes'])} resident")
    if extra:
        head += f" — {', '.join(extra)}"
    lines = [head, f"{'ingest':<12}{'received':>10}{'stored':>10}{'rejected':>10}"]
    for signal, n in s["ingest"].items():
        rejected = sum(n["rejected"].values())
        why = f"  ({_listing(n['rejected'])})" if rejected else ""
        lines.append(f"  {signal:<10}{n['received']:>10}{n['stored']:>10}{rejected:>10}{why}")
    lines.append(
        f"  new rows {s['events_inserted']}, duplicates skipped {s['dedupe_hits']}; "
        f"busy answers: {_listing(s['busy_answers'])}"
    )
    q = s["queue"]
    lines.append(
        f"{'queue':<12}{q['events']} events ({_size(q['bytes'])}) waiting for commit; "
        f"gRPC: {q['grpc_calls']} calls, {_size(q['grpc_bytes'])} in flight"
    )
    events, secs = s["group_commits"]["events"], s["group_commits"]["seconds"]
    if events["count"]:
        lines.append(
            f"{'commits':<12}{events['count']}, {events['mean']:.1f} events and "
            f"{_ms(secs['mean'])} on average, 99 % within {_ms(secs['p99_at_most'])}"
        )
    else:
        lines.append(f"{'commits':<12}none yet")
    r = s["retention"]
    lines.append(
        f"{'upkeep':<12}checkpoints: {_listing(s['checkpoints'])}; retention runs: "
        f"{_listing(r['runs'])}, {r['deleted_events']} events deleted"
    )
    lines.append(f"{'live tail':<12}{s['tail_subscribers']} subscribers")
    sql = s["sql_queries"]
    lines.append(f"{'sql':<12}{sum(sql.values())} queries: {_listing(sql)}")
    a = s["automations"]
    hooks = a["webhooks"]
    webhook_text = (
        f"{hooks['count']} requests ({_listing(a['webhook_outcomes'])}), "
        f"{_ms(hooks['mean'])} on average"
        if hooks["count"]
        else "none"
    )
    lines.append(
        f"{'automations':<12}{a['firings']} firings; actions: {_listing(a['actions'])}; "
        f"webhooks: {webhook_text}"
    )
    return "\n".join(lines)
