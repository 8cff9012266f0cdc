"""`herald automations create|ls|inspect|pause|resume|delete|update|history|backtest`:
automations from the terminal, with Prefect's `prefect automation` messages (P§7.4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._app import HeraldTyper
from cli._errors import handle_errors
from cli._output import FormatOpt, OutputFormat, format_option, note, render, resolve_format
from cli._state import state
from collector.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from collector.client.automations import AutomationsClient

app = HeraldTyper(
    help="Automations: triggers that fire on the presence or absence of events, and actions.",
    no_args_is_help=True,
)

NameArg = Annotated[str | None, typer.Argument(help="the automation's name")]
IdOpt = Annotated[str | None, typer.Option("--id", metavar="<id>", help="the automation's id")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
# No short flag: `-f` is --format in every herald command (docs/cli.md).
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-file",
        metavar="<file>",
        help="automation(s) in a .json, .yaml/.yml or .toml file",
    ),
]
JsonOpt = Annotated[
    str | None,
    typer.Option("--json", "-j", metavar="<json>", help="automation(s) as a JSON string"),
]

_EXTENSIONS = ".yaml, .yml, .json or .toml"
_EMIT_RESOURCE = "{{ event.resource.id if event else 'herald.automation.' ~ automation.id }}"


def _client(ctx: typer.Context) -> AutomationsClient:
    return state(ctx).automations_client()


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # PyYAML is optional: only YAML files need it
        raise InvalidInput(
            "YAML needs the PyYAML package (pip install pyyaml); or use .json or .toml"
        ) from None
    return yaml


def _items(data: Any, source: str) -> list[dict[str, Any]]:
    """A single automation, a list, or ``{"automations": [...]}`` (Prefect's three forms)."""
    if isinstance(data, dict) and "automations" in data and "trigger" not in data:
        data = data["automations"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise InvalidInput(
            f'{source}: expected an automation, a list of automations, or {{"automations": [...]}}'
        )
    return data


def read_automations(path: Path) -> list[dict[str, Any]]:
    """Automations from a JSON, YAML or TOML file."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".toml"):
        raise InvalidInput(f"File extension not recognized. Please use {_EXTENSIONS}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidInput(f"File not found: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"Cannot read {path}: {exc.strerror}") from None
    if suffix == ".json":
        return parse_json_automations(text)
    if suffix == ".toml":
        import tomllib

        try:
            return _items(tomllib.loads(text), str(path))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"Invalid TOML: {exc}") from None
    yaml = _yaml()
    try:
        return _items(yaml.safe_load(text), str(path))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"Invalid YAML: {exc}") from None


def parse_json_automations(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"Invalid JSON: {exc}") from None
    return _items(data, "--json")


def parse_within(text: str) -> Any:
    """``5m``/``30s``/``1h``, a number of seconds, or anything the model takes (PT30S)."""
    from cli._parsing import parse_duration

    delta = parse_duration(text)
    if delta is not None:
        return delta.total_seconds()
    try:
        return float(text)
    except ValueError:
        return text


def _posture(text: str) -> str:
    for posture in ("Reactive", "Proactive"):
        if text.lower() == posture.lower():
            return posture
    raise InvalidInput(f"--posture: expected Reactive or Proactive, got {text!r}")


def _actions(webhook: str | None, emit: str | None) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    if webhook:
        actions.append({"type": "call-webhook", "url": webhook})
    if emit:
        actions.append(
            {
                "type": "emit-event",
                "event": emit,
                # About the triggering event's resource; the automation itself when there is none
                # (a proactive firing with no event).
                "resource": {"prefect.resource.id": _EMIT_RESOURCE},
                "payload": {"triggering_event": "{{ event.id if event else '' }}"},
            }
        )
    return actions or [{"type": "do-nothing"}]


def _describe_actions(automation: Any) -> str:
    def words(action: Any) -> str:
        return str(action.type).replace("-", " ").capitalize()

    plain = [words(a) for a in automation.actions]
    if not automation.actions_on_trigger and not automation.actions_on_resolve:
        return "\n".join(plain)
    on_trigger = plain + [words(a) for a in automation.actions_on_trigger]
    on_resolve = plain + [words(a) for a in automation.actions_on_resolve]
    lines = [f"(trigger) {a}" for a in on_trigger] + [f"(resolve) {a}" for a in on_resolve]
    return "\n".join(lines)


def _model(data: dict[str, Any]) -> Any:
    from collector.domain.automations import parse_automation

    return parse_automation(data)


def _interactive() -> bool:
    return sys.stdin.isatty()


# --------------------------------------------------------------------------------------------
# create / update


@app.command("create")
@handle_errors
def create(
    ctx: typer.Context,
    from_file: FileOpt = None,
    from_json: JsonOpt = None,
    from_event: Annotated[
        str | None,
        typer.Option("--from-event", help="automate this event: every such event of its resource"),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="the automation's name")] = None,
    description: Annotated[str, typer.Option("--description", help="what it is for")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", metavar="<tag>", help="a tag (repeatable)")
    ] = None,
    expect: Annotated[
        list[str] | None,
        typer.Option("--expect", metavar="<name>", help="event name (glob) to count (repeatable)"),
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option("--after", metavar="<name>", help="event name that arms it (repeatable)"),
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option("--match", metavar="<k=v>", help="resource label k=v (repeatable)"),
    ] = None,
    match_related: Annotated[
        list[str] | None,
        typer.Option(
            "--match-related", metavar="<k=v>", help="related resource label k=v (repeatable)"
        ),
    ] = None,
    for_each: Annotated[
        list[str] | None,
        typer.Option(
            "--for-each", metavar="<label>", help="label to split buckets by (repeatable)"
        ),
    ] = None,
    posture: Annotated[
        str | None, typer.Option("--posture", help="Reactive (default) | Proactive")
    ] = None,
    threshold: Annotated[int | None, typer.Option("--threshold", help="events", min=0)] = None,
    within: Annotated[
        str | None, typer.Option("--within", help="window: 30s, 5m, 1h or seconds")
    ] = None,
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="call this URL (POST) when it fires")
    ] = None,
    emit: Annotated[
        str | None, typer.Option("--emit", help="emit an event with this name when it fires")
    ] = None,
) -> None:
    """Create automations from a file, a JSON string, an event, or flags.

    Examples:
      herald automations create --from-file automations.yaml
      herald automations create --name late-orders --expect app.order.shipped
        --match 'prefect.resource.id=app.order.*' --posture Proactive --within 5m
        --after app.order.paid --for-each prefect.resource.id --webhook https://hooks.example/x
      herald automations create --from-event 0193a1b2-… --name "order 8812 shipped"
    """
    trigger_flags = {
        "--expect": expect,
        "--after": after,
        "--match": match,
        "--match-related": match_related,
        "--for-each": for_each,
        "--posture": posture,
        "--threshold": threshold,
        "--within": within,
        "--webhook": webhook,
        "--emit": emit,
        "--name": name,
    }
    given = [flag for flag, value in trigger_flags.items() if value]
    sources = [s for s in (from_file, from_json, from_event) if s is not None]
    if from_event is None and (from_file is not None or from_json is not None):
        if len(sources) > 1:
            raise InvalidInput("Please provide either --from-file or --json, not both.")
        if given:
            raise InvalidInput(f"{given[0]} cannot be combined with --from-file or --json")
        items = (
            read_automations(from_file)
            if from_file is not None
            else parse_json_automations(from_json or "")
        )
    else:
        if len(sources) > 1:
            raise InvalidInput("--from-event cannot be combined with --from-file or --json")
        items = [
            _from_flags(
                ctx,
                from_event,
                name,
                description,
                tag or [],
                expect,
                after,
                match,
                match_related,
                for_each,
                posture,
                threshold,
                within,
                webhook,
                emit,
            )
        ]
    created: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    with _client(ctx) as client:
        for item in items:
            try:
                created.append(client.create(item))
            except InvalidInput as exc:
                failed.append((str(item.get("name", "?")), str(exc)))
    if len(created) == 1 and not failed:
        typer.echo(f"Created automation '{created[0]['name']}' with id {created[0]['id']}")
    elif created:
        typer.echo(f"Created {len(created)} automation(s):")
        for a in created:
            typer.echo(f" - '{a['name']}' with id {a['id']}")
    if failed:
        typer.echo(f"Failed to create {len(failed)} automation(s):", err=True)
        for item_name, reason in failed:
            typer.echo(f" - '{item_name}': {reason}", err=True)
        raise typer.Exit(1)


def _from_flags(
    ctx: typer.Context,
    from_event: str | None,
    name: str | None,
    description: str,
    tags: list[str],
    expect: list[str] | None,
    after: list[str] | None,
    match: list[str] | None,
    match_related: list[str] | None,
    for_each: list[str] | None,
    posture: str | None,
    threshold: int | None,
    within: str | None,
    webhook: str | None,
    emit: str | None,
) -> dict[str, Any]:
    from cli._parsing import parse_labels

    trigger: dict[str, Any] = {"type": "event"}
    if from_event is not None:
        from collector.domain.events import ReceivedEvent
        from collector.domain.triggers import default_trigger_for_event

        with state(ctx).client() as events:
            event = ReceivedEvent.model_validate(events.get(from_event))
        trigger = default_trigger_for_event(event).model_dump(mode="json", exclude={"id"})
        name = name or f"{event.event} on {event.resource['prefect.resource.id']}"
    elif not (expect or after or match or match_related):
        raise InvalidInput(
            "give --from-file, --json or --from-event, or describe the trigger with at least "
            "one of --expect, --after, --match or --match-related (an empty trigger matches "
            "every event)"
        )
    if not name:
        raise InvalidInput("--name: required when the automation is described by flags")
    if expect:
        trigger["expect"] = expect
    if after:
        trigger["after"] = after
    if match:
        trigger["match"] = parse_labels(match, "--match")
    if match_related:
        trigger["match_related"] = parse_labels(match_related, "--match-related")
    if for_each:
        trigger["for_each"] = for_each
    if posture:
        trigger["posture"] = _posture(posture)
    if threshold is not None:
        trigger["threshold"] = threshold
    if within is not None:
        trigger["within"] = parse_within(within)
    return {
        "name": name,
        "description": description,
        "tags": tags,
        "trigger": trigger,
        "actions": _actions(webhook, emit),
    }


@app.command("update")
@handle_errors
def update(
    ctx: typer.Context,
    automation_id: Annotated[str, typer.Option("--id", help="the automation to replace")],
    from_file: FileOpt = None,
    from_json: JsonOpt = None,
) -> None:
    """Replace an automation with the one in a file or JSON string, as a whole.

    Triggers that did not change keep their open windows and counts.

    Example: herald automations update --id 0193… --from-file late-orders.yaml
    """
    if (from_file is None) == (from_json is None):
        raise InvalidInput("Please provide either --from-file or --json.")
    items = (
        read_automations(from_file)
        if from_file is not None
        else parse_json_automations(from_json or "")
    )
    if len(items) != 1:
        raise InvalidInput(f"update takes exactly one automation; found {len(items)}")
    with _client(ctx) as client:
        updated = client.update(automation_id, items[0])
    typer.echo(f"Updated automation '{updated['name']}' ({updated['id']})")


# --------------------------------------------------------------------------------------------
# ls / inspect


@app.command("ls")
@handle_errors
def ls(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """List automations, their triggers described in words, and their actions.

    Example: herald automations ls
    """
    from collector.domain.triggers import describe_trigger

    with _client(ctx) as client:
        automations = client.list()
    fmt = resolve_format(fmt)
    models = [_model(a) for a in automations]
    if fmt is OutputFormat.TABLE:
        if not automations:
            note("No automations found.")
            return
        rows = [
            [
                f"{a['name']}\n{a['id']}" + (f"\n{a['description']}" if a["description"] else ""),
                str(a["enabled"]),
                describe_trigger(m.trigger),
                _describe_actions(m),
            ]
            for a, m in zip(automations, models, strict=True)
        ]
        render(
            automations,
            fmt,
            columns=["Automation", "Enabled", "Trigger", "Actions"],
            table_rows=rows,
            title="Automations",
        )
        return
    if fmt is OutputFormat.CSV:
        records = [
            {
                "id": a["id"],
                "name": a["name"],
                "enabled": a["enabled"],
                "trigger": describe_trigger(m.trigger),
                "actions": _describe_actions(m),
                "created": a["created"],
                "updated": a["updated"],
            }
            for a, m in zip(automations, models, strict=True)
        ]
        render(records, fmt)
        return
    render(automations, fmt)


def _resolve(client: Any, name: str | None, automation_id: str | None) -> list[dict[str, Any]]:
    """The automations a NAME or --id designates (a name may be shared)."""
    if automation_id:
        if name:
            raise InvalidInput("give a name or --id, not both")
        return [client.read(automation_id)]
    if not name:
        raise InvalidInput("give the automation's name, or --id")
    try:
        return list(client.find(name))
    except NotFound:
        raise NotFound(
            f"Automation with name '{name}' not found. You can also specify an id with the "
            "`--id` flag."
        ) from None


@app.command("inspect")
@handle_errors
def inspect(
    ctx: typer.Context,
    name: NameArg = None,
    automation_id: IdOpt = None,
    output: Annotated[str, format_option("json | yaml", metavar="<json|yaml>")] = "json",
) -> None:
    """Show an automation as JSON (or YAML): the shape `create` and `update` take, as Prefect
    writes it (durations in seconds). Several automations of one name: a list.

    Example: herald automations inspect late-orders --format yaml > late-orders.yaml
    """
    if output.lower() not in ("json", "yaml"):
        raise InvalidInput("Only 'json' and 'yaml' output formats are supported.")
    with _client(ctx) as client:
        if automation_id:
            try:
                found = [client.read(automation_id)]
            except NotFound:
                raise NotFound(f"Automation with id '{automation_id}' not found.") from None
        elif name:
            try:
                found = client.find(name)
            except NotFound:
                raise NotFound(f"Automation '{name}' not found.") from None
        else:
            raise InvalidInput("give the automation's name, or --id")
    data: Any = found[0] if len(found) == 1 else found
    if output.lower() == "json":
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(_yaml().safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


# --------------------------------------------------------------------------------------------
# pause / resume / delete


def _set_enabled(
    ctx: typer.Context, name: str | None, automation_id: str | None, enabled: bool, yes: bool
) -> None:
    verb = "Resumed" if enabled else "Paused"
    with _client(ctx) as client:
        targets = _resolve(client, name, automation_id)
        if len(targets) > 1 and not yes and _interactive():
            typer.confirm(
                f"Found {len(targets)} automations named '{name}'. "
                f"{verb[:-1].lower()} all of them?",
                abort=True,
            )
        for target in targets:
            client.set_enabled(target["id"], enabled)
    if automation_id:
        typer.echo(f"{verb} automation with id '{automation_id}'.")
    else:
        ids = ", ".join(f"'{t['id']}'" for t in targets)
        typer.echo(f"{verb} automation(s) with name '{name}' and id(s) {ids}.")


@app.command("pause")
@handle_errors
def pause(
    ctx: typer.Context, name: NameArg = None, automation_id: IdOpt = None, yes: YesOpt = False
) -> None:
    """Pause an automation: it stops evaluating (and loses its open windows) until resumed.

    Example: herald automations pause late-orders
    """
    _set_enabled(ctx, name, automation_id, False, yes)


@app.command("resume")
@handle_errors
def resume(
    ctx: typer.Context, name: NameArg = None, automation_id: IdOpt = None, yes: YesOpt = False
) -> None:
    """Resume a paused automation.

    Example: herald automations resume --id 0193…
    """
    _set_enabled(ctx, name, automation_id, True, yes)


# Prefect's aliases.
app.command("disable", hidden=True)(pause)
app.command("enable", hidden=True)(resume)


@app.command("delete")
@handle_errors
def delete(
    ctx: typer.Context,
    name: NameArg = None,
    automation_id: IdOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="delete every automation")] = False,
    yes: YesOpt = False,
) -> None:
    """Delete an automation (its firing history stays), or all of them with --all.

    Example: herald automations delete late-orders
    """
    with _client(ctx) as client:
        if all_:
            if name or automation_id:
                raise InvalidInput("Cannot use --all together with a name or --id.")
            automations = client.list()
            if not automations:
                typer.echo("No automations found.")
                return
            if not yes:
                typer.confirm(
                    f"Are you sure you want to delete all {len(automations)} automations?",
                    abort=True,
                )
            for a in automations:
                client.delete(a["id"])
            typer.echo(f"Deleted {len(automations)} automations.")
            return
        targets = _resolve(client, name, automation_id)
        if len(targets) > 1:
            raise InvalidInput(
                f"Multiple automations found with name '{name}'. Please specify an id with "
                "the `--id` flag instead."
            )
        what = f"id '{automation_id}'" if automation_id else f"name '{name}'"
        if not yes and _interactive():
            typer.confirm(f"Are you sure you want to delete automation with {what}?", abort=True)
        client.delete(targets[0]["id"])
    typer.echo(f"Deleted automation with {what}")


# --------------------------------------------------------------------------------------------
# history / backtest


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


@app.command("history")
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
    with _client(ctx) as client:
        names = {a["id"]: a["name"] for a in client.list()}
        if name or automation_id:
            targets = _resolve(client, name, automation_id)
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


@app.command("backtest")
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
    with _client(ctx) as client:
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
            targets = _resolve(client, name, automation_id)
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
