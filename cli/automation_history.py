"""`herald automations history|backtest`: what automations did (firings and their action
runs), and what one would have done over stored events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli._automation_input import (
    FileOpt,
    IdOpt,
    JsonOpt,
    NameArg,
    parse_json_automations,
    read_automations,
    resolve,
)
from cli._errors import handle_errors
from cli._output import FormatOpt, OutputFormat, note, render, resolve_format
from cli._state import state
from collector.errors import InvalidInput


def _local(iso: str | None) -> str:
    from cli.events import local_time

    return local_time(iso)[:23] if iso else ""


def _key(labels: dict[str, str], key: list[str]) -> str:
    if labels:
        return ", ".join(f"{k}={v}" for k, v in labels.items())
    return ", ".join(key)


def _runs(runs: list[dict[str, Any]]) -> str:
    lines = []
    for r in runs:
        text = f"{r['action_type']}: {r['status']}"
        if r.get("response_status") is not None:
            text += f" ({r['response_status']})"
        if r.get("reason"):
            text += f" — {r['reason']}"
        lines.append(text)
    return "\n".join(lines)


@handle_errors
def history(
    ctx: typer.Context,
    name: NameArg = None,
    automation_id: IdOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="firings to show", min=1, max=1000)
    ] = 20,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="only firings with an action run in this status: triggered (waiting or "
            "running), executed, failed, cancelled (paused or deleted before it ran), skipped "
            "(rate limit or full queue)",
            metavar="STATUS",
        ),
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Show recent firings (triggered and resolved) and what their actions did, with how
    many action runs ended in each status.

    Example: herald automations history late-orders --status skipped --limit 50
    """
    counts: dict[str, int] = {}
    with state(ctx).automations_client() as client:
        names = {a["id"]: a["name"] for a in client.list()}
        if name or automation_id:
            targets = resolve(client, name, automation_id)
            firings: list[dict[str, Any]] = []
            for t in targets:
                page = client.history_page(t["id"], limit, status)
                firings += page["firings"]
                for key, n in page.get("run_counts", {}).items():
                    counts[key] = counts.get(key, 0) + n
            firings.sort(key=lambda f: f["occurred"], reverse=True)
            firings = firings[:limit]
        else:
            page = client.history_page(None, limit, status)
            firings, counts = page["firings"], page.get("run_counts", {})
    fmt = resolve_format(fmt)
    if fmt is not OutputFormat.TABLE:
        render(firings, fmt)
        return
    if not firings:
        note(f"No firings with a {status} action run." if status else "No firings yet.")
        _note_counts(counts)
        return
    rows = [
        [
            _local(f["occurred"]),
            names.get(f["automation_id"], f["automation_id"]),
            f["kind"],
            _key(f["triggering_labels"], f["bucket_key"]),
            (
                f"{f['triggering_event_name']}\n{f['triggering_event_id']}"
                if f["triggering_event_id"]
                else ""
            ),
            _runs(f["action_runs"]),
        ]
        for f in firings
    ]
    render(
        firings,
        fmt,
        columns=["occurred", "automation", "kind", "key", "triggering event", "actions"],
        table_rows=rows,
        title="Firings",
    )
    _note_counts(counts)


def _note_counts(counts: dict[str, int]) -> None:
    # A runaway shows here: thousands cancelled or skipped, beyond the firings listed.
    if counts:
        note("Action runs: " + ", ".join(f"{n:,} {key}" for key, n in sorted(counts.items())))


@handle_errors
def backtest(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="from: 7d ago, or an ISO time")],
    name: NameArg = None,
    automation_id: IdOpt = None,
    from_file: FileOpt = None,
    from_json: JsonOpt = None,
    until: Annotated[
        str | None, typer.Option("--until", help="to: 1h ago or an ISO time (default now)")
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """List the firings an automation would have had over stored events (no actions run).

    The automation is a saved one (NAME or --id), or comes from a file or JSON string (an
    automation, or a bare trigger).

    Example: herald automations backtest late-orders --since 7d
    """
    from cli._parsing import parse_time
    from collector.domain.events import format_time

    kwargs: dict[str, Any] = {"since": format_time(parse_time(since, "--since"))}
    if until:
        kwargs["until"] = format_time(parse_time(until, "--until"))
    chosen = [x for x in (name, automation_id, from_file, from_json) if x is not None]
    if len(chosen) != 1:
        raise InvalidInput("give exactly one of: a name, --id, --from-file or --json")
    with state(ctx).automations_client() as client:
        if from_file is not None or from_json is not None:
            items = (
                read_automations(from_file)
                if from_file is not None
                else parse_json_automations(from_json or "")
            )
            if len(items) != 1:
                raise InvalidInput(f"backtest takes one automation or trigger; found {len(items)}")
            key = "automation" if "trigger" in items[0] else "trigger"
            kwargs[key] = items[0]
        else:
            targets = resolve(client, name, automation_id)
            if len(targets) > 1:
                raise InvalidInput(
                    f"Multiple automations found with name '{name}'. Please specify an id "
                    "with the `--id` flag instead."
                )
            kwargs["automation_id"] = targets[0]["id"]
        result = _with_progress(lambda progress: client.backtest(progress=progress, **kwargs))
    firings = result.get("firings", [])
    fmt = resolve_format(fmt)
    note(
        f"{len(firings)} firing(s) over {result.get('events', 0)} events"
        + (" (truncated)" if result.get("truncated") else "")
    )
    if fmt is not OutputFormat.TABLE:
        render(firings, fmt)
        return
    rows = [
        [
            _local(f["occurred"]),
            f["kind"],
            _key(f.get("triggering_labels", {}), f.get("bucket_key", [])),
            (
                f"{f['triggering_event']['event']}\n{f['triggering_event']['id']}"
                if f.get("triggering_event")
                else ""
            ),
            f["trigger_path"],
        ]
        for f in firings
    ]
    if rows:
        render(
            firings,
            fmt,
            columns=["occurred", "kind", "key", "triggering event", "trigger"],
            table_rows=rows,
            title=f"Backtest: {result['automation']['name']}",
        )


def _with_progress(run: Any) -> Any:
    """Run ``run(progress)`` with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("backtest", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run(progress)
