"""``restore_herald_actions`` on its own: the inverse of the Prefect client view for the cases
the HTTP tests do not reach (the view is computed by ``prefect_client_view`` itself, so the
two stay each other's inverse)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.errors import InvalidAutomation
from collector.mapping.prefect_action_restore import restore_herald_actions
from collector.mapping.prefect_automations import NO_BLOCK, prefect_client_view

WEBHOOK: dict[str, Any] = {"type": "call-webhook", "url": "http://h/x", "method": "POST"}
EMIT = {"type": "emit-event", "event": "x.y", "resource": {"prefect.resource.id": "r"}}


def test_the_view_sent_back_with_its_extra_keys_is_the_automation() -> None:
    stored = {"name": "n", "actions": [WEBHOOK, EMIT], "actions_on_resolve": [EMIT]}
    view = prefect_client_view(stored)
    for prefect in (False, True):
        assert restore_herald_actions(view, stored, from_prefect_client=prefect) == stored
        assert restore_herald_actions(view, None, from_prefect_client=prefect) == stored


def test_an_unchanged_empty_payload_adds_no_body() -> None:
    masked = {"type": "call-webhook", "block_document_id": NO_BLOCK, "payload": ""}
    out = restore_herald_actions(
        {"actions": [masked]}, {"actions": [WEBHOOK]}, from_prefect_client=True
    )
    assert out["actions"] == [WEBHOOK]


@pytest.mark.parametrize(
    ("action", "named"),
    [
        ({"type": "do-nothing", "herald_type": "send-notification"}, "not a type Herald shows"),
        ({"type": "do-nothing", "herald_type": "call-webhook", "url": "u"}, "herald_type"),
        (
            {
                "type": "call-webhook",
                "herald_type": "call-webhook",
                "url": "u",
                "block_document_id": "11111111-1111-1111-1111-111111111111",
            },
            "block_document_id",
        ),
    ],
)
def test_an_inconsistent_herald_type_is_refused(action: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidAutomation, match=named):
        restore_herald_actions({"actions": [action]}, None, from_prefect_client=False)


def test_a_real_do_nothing_and_an_unmasked_list_pass_through() -> None:
    stored = {"actions": [{"type": "do-nothing"}, EMIT]}
    sent = {"actions": [{"type": "do-nothing"}, {"type": "pause-automation", "source": "inferred"}]}
    # Position 1 is no longer a masked emit-event: the client replaced it, and that is kept.
    assert restore_herald_actions(sent, stored, from_prefect_client=True) == sent
    # A list of another length without masked actions is not ambiguous either.
    other = {"actions": [{"type": "pause-automation", "source": "inferred"}]}
    assert (
        restore_herald_actions(other, {"actions": [WEBHOOK, EMIT]}, from_prefect_client=True)
        == other
    )
    # With one, it is: that do-nothing may be the emit-event.
    with pytest.raises(InvalidAutomation, match=r"emit-event at actions\[1\]"):
        restore_herald_actions(
            {"actions": [{"type": "do-nothing"}]},
            {"actions": [WEBHOOK, EMIT]},
            from_prefect_client=True,
        )
    # Not an object: left for validation to name.
    assert restore_herald_actions([1], stored, from_prefect_client=True) == [1]
