"""What ``herald automations`` commands take from the user, turned into automations: the
options naming one (NAME, ``--id``), files and JSON strings in Prefect's three forms, the
trigger flags of ``create``, and a name or id resolved against the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._state import state
from collector.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from collector.client.automations import AutomationJson, AutomationsClient

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


def load_yaml() -> Any:
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
    yaml = load_yaml()
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


def from_flags(
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


def resolve(
    client: AutomationsClient, name: str | None, automation_id: str | None
) -> list[AutomationJson]:
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
