"""`herald automations create|ls|inspect|pause|resume|delete|update|history|backtest`:
automations from the terminal, with Prefect's `prefect automation` messages (P§7.4). What the
commands take from the user is read in ``_automation_input``; history and backtest live in
``automation_history``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import automation_history
from cli._app import HeraldTyper
from cli._automation_input import (
    FileOpt,
    IdOpt,
    JsonOpt,
    NameArg,
    YesOpt,
    from_flags,
    load_yaml,
    parse_json_automations,
    read_automations,
    resolve,
)
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


def _client(ctx: typer.Context) -> AutomationsClient:
    return state(ctx).automations_client()


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
            from_flags(
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
        typer.echo(load_yaml().safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


# --------------------------------------------------------------------------------------------
# pause / resume / delete


def _set_enabled(
    ctx: typer.Context, name: str | None, automation_id: str | None, enabled: bool, yes: bool
) -> None:
    verb = "Resumed" if enabled else "Paused"
    with _client(ctx) as client:
        targets = resolve(client, name, automation_id)
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
        targets = resolve(client, name, automation_id)
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

app.command("history")(automation_history.history)
app.command("backtest")(automation_history.backtest)
