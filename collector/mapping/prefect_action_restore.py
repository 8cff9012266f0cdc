"""Herald's actions back from what Prefect's client sends: the inverse of the client view in
``prefect_automations`` (``call-webhook`` with the nil block id and its body as ``payload``;
``emit-event``/``run-command`` as ``do-nothing``; the real fields as extra keys, with
``herald_type`` naming the real type).

Two cases, because Prefect's client may or may not keep the extra keys:

* An action that still has ``herald_type`` (a client that keeps unknown keys, curl, a copy of
  the view) is restored from its own keys, for any client and on create too; a webhook's
  ``payload`` is its body (that is how it was shown, and the field Prefect's users edit).
* Prefect 3.x's own models drop the extra keys (``extra="ignore"``), so
  ``Automation.read(...).update()`` PUTs a bare ``{"type": "do-nothing"}`` or a nil-block
  ``call-webhook`` without its URL. For a PUT from Prefect's client such an action is the
  stored action at the same place (same list, same position, of the type that is shown so),
  with a webhook's ``payload`` as its body. When that cannot be decided (the list changed
  length while it holds such actions) or the stored action is not there (a masked webhook
  where no webhook is stored), the PUT is refused with a 422 naming what would be lost:
  an action must never silently become a ``do-nothing`` or lose its URL.

The price (docs/integrations.md): through Prefect's client, a ``do-nothing`` in the place of a
stored ``emit-event``/``run-command`` keeps that action, and actions cannot be reordered;
such edits are made with ``herald automations``, the web UI or any other HTTP client.
"""

from __future__ import annotations

from typing import Any

from collector.errors import InvalidAutomation
from collector.mapping.prefect_automations import ACTION_LISTS, NO_BLOCK, NOT_IN_PREFECT

WEBHOOK = "call-webhook"
MASKED_AS = {WEBHOOK: WEBHOOK, **{kind: "do-nothing" for kind in NOT_IN_PREFECT}}


def _unmasked(action: dict[str, Any], where: str) -> dict[str, Any]:
    """``action`` (with ``herald_type``) as the Herald action it shows."""
    real = action["herald_type"]
    if real not in MASKED_AS:
        raise InvalidAutomation(
            f"{where}.herald_type: {real!r} is not a type Herald shows to Prefect's client "
            f"(one of {', '.join(sorted(MASKED_AS))})"
        )
    if action.get("type") != MASKED_AS[real]:
        raise InvalidAutomation(
            f"{where}.herald_type: {real!r} is shown as type {MASKED_AS[real]!r}, but the "
            f"action has type {action.get('type')!r}; send one or the other"
        )
    out = {k: v for k, v in action.items() if k != "herald_type"}
    out["type"] = real
    if real == WEBHOOK:
        block = out.pop("block_document_id", NO_BLOCK)
        if str(block) != NO_BLOCK:
            raise InvalidAutomation(
                f"{where}.block_document_id: Herald's call-webhook takes url, not a Prefect "
                "webhook block (it is shown with the nil block id)"
            )
        _payload_as_body(out, out.pop("payload", None))
    return out


def _payload_as_body(webhook: dict[str, Any], payload: Any) -> None:
    # The view shows ``body or ""`` as payload: an unchanged payload leaves the body alone.
    if payload is not None and payload != (webhook.get("body") or ""):
        webhook["body"] = payload


def _is_masked_webhook(action: dict[str, Any]) -> bool:
    return (
        action.get("type") == WEBHOOK
        and "url" not in action
        and str(action.get("block_document_id")) == NO_BLOCK
    )


def _is_bare_do_nothing(action: dict[str, Any]) -> bool:
    return set(action) == {"type"} and action["type"] == "do-nothing"


def _masked_kind(action: Any) -> str | None:
    """The type of stored action ``action`` (sent by Prefect's client) may be the mask of:
    ``call-webhook``, ``"do-nothing"`` (for emit-event/run-command), or None."""
    if not isinstance(action, dict) or "herald_type" in action:
        return None
    if _is_masked_webhook(action):
        return WEBHOOK
    if _is_bare_do_nothing(action):
        return "do-nothing"
    return None


def _stored_type(action: Any) -> Any:
    return action.get("type") if isinstance(action, dict) else None


def _check_same_places(key: str, sent: list[Any], stored: list[Any]) -> None:
    """Refuse a list whose length changed while it holds masked actions that stand for
    stored ones: which is which cannot be told, and guessing would lose one."""
    if len(sent) == len(stored):
        return
    shown = {_masked_kind(a) for a in sent} - {None}
    for i, action in enumerate(stored):
        kind = _stored_type(action)
        if kind in MASKED_AS and MASKED_AS[kind] in shown:
            raise InvalidAutomation(
                f"{key}: Prefect's client sent {len(sent)} actions where {len(stored)} are "
                f"stored, and Herald's {kind} at {key}[{i}] comes back from it as a bare "
                f"{MASKED_AS[kind]} (its models drop Herald's fields), so Herald cannot tell "
                "which action is which and would lose it; add, remove or reorder this "
                "automation's actions with `herald automations`, the web UI or the HTTP API"
            )


def _from_prefect_list(key: str, sent: list[Any], stored: list[Any]) -> list[Any]:
    _check_same_places(key, sent, stored)
    out = []
    for i, action in enumerate(sent):
        kind = _masked_kind(action)
        here = stored[i] if i < len(stored) else None
        if kind == "do-nothing" and _stored_type(here) in NOT_IN_PREFECT:
            out.append(here)
        elif kind == WEBHOOK:
            if not isinstance(here, dict) or here.get("type") != WEBHOOK:
                raise InvalidAutomation(
                    f"{key}[{i}]: a call-webhook with the nil block id is Herald's webhook as "
                    "Prefect's client shows it, but its url (and headers) did not come back "
                    f"and no call-webhook is stored at {key}[{i}] to take them from; set the "
                    "webhook with `herald automations`, the web UI or the HTTP API"
                )
            webhook = dict(here)
            _payload_as_body(webhook, action.get("payload"))
            out.append(webhook)
        else:
            out.append(action)
    return out


def restore_herald_actions(
    data: Any, stored: dict[str, Any] | None, *, from_prefect_client: bool
) -> Any:
    """``data`` (a create or PUT body) with Herald's actions restored (module docstring).
    ``stored``: the automation's current JSON for a PUT (secrets as markers, which the
    update resolves), None for a create. Anything not an object is left for validation."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key in ACTION_LISTS:
        sent = out.get(key)
        if not isinstance(sent, list):
            continue
        restored = [
            _unmasked(a, f"{key}[{i}]") if isinstance(a, dict) and "herald_type" in a else a
            for i, a in enumerate(sent)
        ]
        before = stored.get(key) if stored is not None else None
        if from_prefect_client and isinstance(before, list):
            restored = _from_prefect_list(key, restored, before)
        out[key] = restored
    return out
