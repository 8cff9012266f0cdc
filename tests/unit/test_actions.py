"""Actions (SPEC §7, P§6.3, §6.6): each action type's work, its templates, and how it fails —
with an httpx MockTransport for webhooks and plain callbacks for storing events and pausing."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx

from collector.automations.actions import ActionCall, ActionExecutor, backoff_delay
from collector.automations.events import CAUSE_ROLE, DEPTH_LABEL, Cause
from collector.clock import ManualClock
from collector.config import AutomationsConfig
from collector.domain.automation_records import Firing
from collector.domain.automations import parse_automation
from collector.domain.events import ReceivedEvent
from collector.errors import InvalidEvent, NotFound

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def order_shipped(**resource: str) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=T0,
        event="app.order.shipped",
        resource={"prefect.resource.id": "app.order.8812", "region": "eu", **resource},
        related=[{"prefect.resource.id": "app.customer.17", "prefect.resource.role": "customer"}],
        payload={"carrier": "DHL"},
        id=uuid4(),
        received=T0,
    )


class Harness:
    """An ActionExecutor whose webhook, event store and pause switch are recorded."""

    def __init__(self, handler: Any = None, **config: Any) -> None:
        self.requests: list[httpx.Request] = []
        self.emitted: list[dict[str, Any]] = []
        self.enabled: list[tuple[UUID, bool, Cause]] = []
        self.reject_emit: str | None = None
        self.known: set[UUID] = set()

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request) if handler else httpx.Response(200, text="ok")

        async def emit(events: list[dict[str, Any]], resumed: bool) -> None:
            if self.reject_emit:
                raise InvalidEvent(self.reject_emit)
            self.emitted += events

        async def set_enabled(automation_id: UUID, enabled: bool, cause: Cause) -> None:
            if self.known and automation_id not in self.known:
                raise NotFound(f"Automation with id '{automation_id}' not found.")
            self.enabled.append((automation_id, enabled, cause))

        self.http = httpx.AsyncClient(transport=httpx.MockTransport(record))
        self.executor = ActionExecutor(
            AutomationsConfig(**config),
            ManualClock(T0),
            http=self.http,
            emit=emit,
            set_enabled=set_enabled,
            backoff_base=0.0,
        )

    def run(
        self,
        action: dict[str, Any],
        event: ReceivedEvent | None = None,
        labels: dict[str, str] | None = None,
    ) -> Any:
        automation = parse_automation(
            {"name": "orders", "trigger": {"expect": ["app.order.shipped"]}, "actions": [action]}
        )
        event = event if event is not None else order_shipped()
        firing = Firing(
            id=uuid4(),
            automation_id=automation.id,
            trigger_id=automation.trigger.id,
            trigger_path="trigger",
            kind="triggered",
            occurred=T0,
            triggering_labels=labels or {},
            triggering_event=event,
        )
        call = ActionCall(
            automation=automation,
            firing=firing,
            action=automation.actions[0],
            where="actions[0]",
            run_id=uuid4(),
            event=None,
            cause=Cause(1, (str(automation.id),)),
        )

        async def go() -> Any:
            try:
                return await self.executor.run(call)
            finally:
                await self.http.aclose()

        return asyncio.run(go())


def test_do_nothing_is_executed() -> None:
    assert Harness().run({"type": "do-nothing"}).status == "executed"


def test_webhook_renders_url_headers_and_body_and_records_the_status() -> None:
    h = Harness(lambda r: httpx.Response(201, text="created"))
    outcome = h.run(
        {
            "type": "call-webhook",
            "url": "http://hooks.test/{{ event.resource.labels.region }}/orders",
            "headers": {"X-Order": "{{ event.resource.id }}", "Authorization": "Bearer s3cret"},
            "body": '{"order": "{{ event.resource.id }}", '
            '"carrier": "{{ event.payload.carrier }}"}',
        }
    )
    assert outcome.status == "executed"
    assert outcome.response_status == 201
    assert outcome.detail["response_body"] == "created"
    (request,) = h.requests
    assert str(request.url) == "http://hooks.test/eu/orders"
    assert request.method == "POST"
    assert request.headers["x-order"] == "app.order.8812"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"order": "app.order.8812", "carrier": "DHL"}


def test_webhook_default_body_carries_the_automation_firing_and_event() -> None:
    h = Harness()
    h.run({"type": "call-webhook", "url": "http://hooks.test/x"})
    body = json.loads(h.requests[0].content)
    assert body["automation"]["name"] == "orders"
    assert body["firing"]["kind"] == "triggered"
    assert body["event"]["event"] == "app.order.shipped"


def test_webhook_retries_server_errors_then_succeeds() -> None:
    answers = iter([503, 502, 200])
    h = Harness(lambda r: httpx.Response(next(answers)))
    outcome = h.run({"type": "call-webhook", "url": "http://hooks.test/x", "retries": 3})
    assert outcome.status == "executed"
    assert outcome.detail["attempts"] == 3
    assert len(h.requests) == 3


def test_webhook_gives_up_after_its_retries_with_the_last_reason() -> None:
    h = Harness(lambda r: httpx.Response(503))
    outcome = h.run({"type": "call-webhook", "url": "http://hooks.test/x", "retries": 2})
    assert outcome.status == "failed"
    assert outcome.reason == "the webhook answered 503 Service Unavailable (after 3 attempts)"
    assert outcome.response_status == 503


def test_config_caps_the_retries_an_action_asks_for() -> None:
    h = Harness(lambda r: httpx.Response(500), webhook_retries=1)
    h.run({"type": "call-webhook", "url": "http://hooks.test/x", "retries": 5})
    assert len(h.requests) == 2


def test_a_client_error_is_not_retried() -> None:
    h = Harness(lambda r: httpx.Response(404))
    outcome = h.run({"type": "call-webhook", "url": "http://hooks.test/x"})
    assert (outcome.status, outcome.reason, len(h.requests)) == (
        "failed",
        "the webhook answered 404 Not Found",
        1,
    )


def test_a_connection_error_fails_with_its_reason() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    outcome = Harness(refuse).run({"type": "call-webhook", "url": "http://x.test/", "retries": 0})
    assert outcome.status == "failed"
    assert outcome.reason == "ConnectError: connection refused (after 1 attempt)"


def test_a_template_that_fails_to_render_fails_the_action_and_names_the_field() -> None:
    outcome = Harness().run(
        {"type": "call-webhook", "url": "http://x.test/", "body": "{{ 1 / 0 }}"}
    )
    assert outcome.status == "failed"
    assert outcome.reason.startswith("Template rendering failed: actions[0].body:")
    assert "template_error" in outcome.detail


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(i) for i in range(3)] == [0.5, 1.0, 2.0]
    assert backoff_delay(20) == 30.0


def test_emit_event_renders_everything_and_marks_its_cause() -> None:
    h = Harness()
    outcome = h.run(
        {
            "type": "emit-event",
            "event": "app.order.{{ event.payload.carrier | lower }}",
            "resource": {"prefect.resource.id": "alert.{{ event.resource.id }}"},
            "payload": {"region": "{{ labels.region }}", "n": 3},
        },
        labels={"region": "eu"},
    )
    assert outcome.status == "executed"
    (event,) = h.emitted
    assert event["event"] == "app.order.dhl"
    assert event["resource"] == {"prefect.resource.id": "alert.app.order.8812"}
    assert event["payload"] == {"region": "eu", "n": 3}
    cause = event["related"][-1]
    assert cause["prefect.resource.role"] == CAUSE_ROLE
    assert cause[DEPTH_LABEL] == "1"
    assert outcome.detail["emitted_event"] == event["id"]


def test_emit_event_rejected_by_the_grammar_fails() -> None:
    h = Harness()
    h.reject_emit = "resource: the prefect.resource.id label must be a non-empty string"
    outcome = h.run(
        {"type": "emit-event", "event": "x", "resource": {"prefect.resource.id": "{{ nothing }}"}}
    )
    assert outcome.status == "failed"
    assert "the event was not stored" in outcome.reason


def test_pause_selected_automation() -> None:
    target = uuid4()
    h = Harness()
    outcome = h.run({"type": "pause-automation", "automation_id": str(target)})
    assert outcome.status == "executed"
    assert h.enabled[0][:2] == (target, False)
    assert outcome.targets == [
        {"prefect.resource.id": f"herald.automation.{target}", "prefect.resource.role": "target"}
    ]


def test_resume_inferred_from_the_triggering_event() -> None:
    target = uuid4()
    event = order_shipped()
    event.related.append(
        {"prefect.resource.id": f"herald.automation.{target}", "prefect.resource.role": "x"}
    )
    h = Harness()
    outcome = h.run({"type": "resume-automation", "source": "inferred"}, event)
    assert outcome.status == "executed"
    assert h.enabled[0][:2] == (target, True)


def test_inferring_with_no_automation_in_the_event_fails() -> None:
    outcome = Harness().run({"type": "pause-automation", "source": "inferred"})
    assert (outcome.status, outcome.reason) == ("failed", "No automation could be inferred")


def test_pausing_an_unknown_automation_fails() -> None:
    h = Harness()
    h.known = {uuid4()}
    outcome = h.run({"type": "pause-automation", "automation_id": str(uuid4())})
    assert outcome.status == "failed"
    assert "not found" in outcome.reason


def test_run_command_is_refused_unless_allowed() -> None:
    outcome = Harness().run({"type": "run-command", "argv": ["true"]})
    assert outcome.status == "failed"
    assert "automations.allow_commands" in outcome.reason


def test_run_command_renders_its_argv_and_records_output() -> None:
    outcome = Harness(allow_commands=True).run(
        {
            "type": "run-command",
            "argv": [sys.executable, "-c", "import sys; print(sys.argv[1])", "{{ event.event }}"],
        }
    )
    assert outcome.status == "executed"
    assert outcome.detail["stdout"].strip() == "app.order.shipped"
    assert outcome.response_status == 0


def test_run_command_nonzero_exit_fails() -> None:
    outcome = Harness(allow_commands=True).run(
        {"type": "run-command", "argv": [sys.executable, "-c", "raise SystemExit(3)"]}
    )
    assert (outcome.status, outcome.reason) == ("failed", "the command exited with status 3")


def test_run_command_timeout_kills_it() -> None:
    outcome = Harness(allow_commands=True).run(
        {
            "type": "run-command",
            "timeout_seconds": 0.2,
            "argv": [sys.executable, "-c", "import time; time.sleep(30)"],
        }
    )
    assert outcome.status == "failed"
    assert "did not finish within 0.2 s" in outcome.reason


def test_run_command_missing_program_fails() -> None:
    outcome = Harness(allow_commands=True).run(
        {"type": "run-command", "argv": ["/nonexistent/herald-test-program"]}
    )
    assert outcome.status == "failed"
    assert outcome.reason.startswith("cannot start '/nonexistent/herald-test-program'")
