"""Prefect's automations REST shapes (P§6.2) at the edge: the ``POST /api/automations/filter``
body (sort, limit, offset and ``automations: {id, name, created, tags}``), its selection over the
stored automations, and the view of an automation that Prefect's own client can load.

Why a client view: the ``prefect`` package validates every automation it reads against its
own action models, a union of Prefect's action types. Herald's ``call-webhook`` takes a URL
where Prefect's takes a webhook block (``block_document_id``, required), and ``emit-event`` and
``run-command`` are not Prefect types at all, so one such action would make ``prefect
automation ls`` fail for every automation. For a request from Prefect's client (its
``User-Agent: prefect/…``) those actions are therefore shown in Prefect's vocabulary:
``call-webhook`` with the nil block id and its body as ``payload``, the other two as
``do-nothing``; each keeps its Herald fields as extra keys (``herald_type`` names the real
type), which Prefect's models ignore (and drop: what the client sends back is mapped back
to Herald's actions by ``prefect_action_restore``). Everyone else (curl, the web UI) gets
Herald's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from collector.domain.automation_records import StoredAutomation
from collector.errors import InvalidInput

SORTS = ("NAME_ASC", "NAME_DESC", "CREATED_DESC", "UPDATED_DESC")
ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")
# Herald action types Prefect's client models cannot load as they are.
NOT_IN_PREFECT = ("emit-event", "run-command")
NO_BLOCK = str(UUID(int=0))  # the block id shown for Herald's URL webhooks
PREFECT_CLIENT_AGENT = "prefect/"


@dataclass(frozen=True, slots=True)
class AutomationQuery:
    """A parsed ``/api/automations/filter`` body; empty criteria select everything."""

    sort: str = "NAME_ASC"
    limit: int | None = None
    offset: int = 0
    ids: tuple[str, ...] | None = None
    names: tuple[str, ...] | None = None
    created_before: datetime | None = None
    tags_all: tuple[str, ...] | None = None
    tags_any: tuple[str, ...] | None = None
    tags_null: bool | None = None


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be an object")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{where}: must be a list of strings")
    return tuple(value)


def _known(data: dict[str, Any], keys: Sequence[str], where: str) -> None:
    # Prefect's filter models forbid unknown keys (422): a typo must not select everything.
    for key in data:
        if key not in keys:
            raise InvalidInput(
                f"{where}.{key}: unknown field" if where else f"{key}: unknown field"
            )


def parse_query(data: dict[str, Any]) -> AutomationQuery:
    """The filter body as Prefect's client sends it; ``InvalidInput`` names the field."""
    _known(data, ("sort", "limit", "offset", "automations"), "")
    sort = data.get("sort") or "NAME_ASC"
    if sort not in SORTS:
        raise InvalidInput(f"sort: must be one of {', '.join(SORTS)}")
    limit = data.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInput("limit: must be a whole number ≥ 0 or null (no limit)")
    offset = data.get("offset") or 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset: must be a whole number ≥ 0")
    criteria = _object(data.get("automations"), "automations")
    _known(criteria, ("id", "name", "created", "tags"), "automations")
    ids = _object(criteria.get("id"), "automations.id")
    _known(ids, ("any_",), "automations.id")
    name = _object(criteria.get("name"), "automations.name")
    _known(name, ("any_",), "automations.name")
    created = _object(criteria.get("created"), "automations.created")
    _known(created, ("before_",), "automations.created")
    tags = _object(criteria.get("tags"), "automations.tags")
    _known(tags, ("all_", "any_", "is_null_"), "automations.tags")
    before = created.get("before_")
    tags_null = tags.get("is_null_")
    if tags_null is not None and not isinstance(tags_null, bool):
        raise InvalidInput("automations.tags.is_null_: must be true, false or null")
    return AutomationQuery(
        sort=sort,
        limit=limit,
        offset=offset,
        ids=_ids(ids.get("any_")),
        names=_strings(name.get("any_"), "automations.name.any_"),
        created_before=None if before is None else _time(before, "automations.created.before_"),
        tags_all=_strings(tags.get("all_"), "automations.tags.all_"),
        tags_any=_strings(tags.get("any_"), "automations.tags.any_"),
        tags_null=tags_null,
    )


def _ids(value: Any) -> tuple[str, ...] | None:
    given = _strings(value, "automations.id.any_")
    if given is None:
        return None
    try:
        return tuple(str(UUID(v)) for v in given)
    except ValueError:
        raise InvalidInput("automations.id.any_: must be a list of automation ids") from None


def _time(value: Any, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{where}: {value!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _matches(stored: StoredAutomation, q: AutomationQuery) -> bool:
    a = stored.automation
    if q.ids is not None and str(a.id) not in q.ids:
        return False
    if q.names is not None and a.name not in q.names:
        return False
    if q.created_before is not None and not stored.created < q.created_before:
        return False
    if q.tags_all is not None and not set(q.tags_all) <= set(a.tags):
        return False
    if q.tags_any is not None and not set(q.tags_any) & set(a.tags):
        return False
    return q.tags_null is None or q.tags_null == (not a.tags)


def select(found: Sequence[StoredAutomation], q: AutomationQuery) -> list[StoredAutomation]:
    """The automations ``q`` selects, sorted (ties by id, so pages are stable) and paged."""
    chosen = [s for s in found if _matches(s, q)]
    if q.sort.startswith("NAME"):
        chosen.sort(key=lambda s: (s.automation.name, str(s.automation.id)))
    else:
        field = "created" if q.sort == "CREATED_DESC" else "updated"
        chosen.sort(key=lambda s: str(s.automation.id))
        chosen.sort(key=lambda s: getattr(s, field))
    if q.sort.endswith("DESC"):
        chosen.reverse()
    end = None if q.limit is None else q.offset + q.limit
    return chosen[q.offset : end]


def is_prefect_client(user_agent: str | None) -> bool:
    """Whether the request came from the ``prefect`` package's client."""
    return bool(user_agent) and str(user_agent).startswith(PREFECT_CLIENT_AGENT)


def _prefect_action(action: dict[str, Any]) -> dict[str, Any]:
    kind = action.get("type")
    if kind == "call-webhook":
        return {
            **action,
            "herald_type": kind,
            "block_document_id": NO_BLOCK,
            "payload": action.get("body") or "",
        }
    if kind in NOT_IN_PREFECT:
        return {**action, "type": "do-nothing", "herald_type": kind}
    return action


def prefect_client_view(automation: dict[str, Any]) -> dict[str, Any]:
    """``automation`` (Herald's read JSON) with its actions in Prefect's vocabulary (module
    docstring); everything else unchanged."""
    out = dict(automation)
    for key in ACTION_LISTS:
        actions = out.get(key)
        if isinstance(actions, list):
            out[key] = [_prefect_action(a) if isinstance(a, dict) else a for a in actions]
    return out
