"""Running one automation action (SPEC §7, Prefect P§6.3, §6.6): do-nothing, call-webhook,
emit-event, pause-automation, resume-automation and run-command.

``ActionExecutor.run`` renders the action's templates, does the work and returns an
``Outcome`` (executed or failed, with a reason and details such as the webhook's response
status; cancelled when the automation was paused or deleted while a webhook waited to retry,
see ``StopSignal``). It never raises for the action's own failures: a bad template, a refused
command, a webhook that kept failing all become ``failed`` outcomes that the runner records.
Storing events and pausing automations are callbacks the runner provides, so this module knows
neither the store nor the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx

from collector.automations.events import (
    Cause,
    automation_id_of,
    automation_resource_id,
    cause_related,
    derived_id,
)
from collector.automations.secrets import SecretSource, SecretsView
from collector.automations.template_context import build_context
from collector.automations.templates import TemplateEngine
from collector.automations.webhook_rules import (
    host_port,
    redact_headers,
    userinfo_forms,
    webhook_host_allowed,
)
from collector.clock import Clock
from collector.config import AutomationsConfig
from collector.domain.automation_records import Firing
from collector.domain.automations import (
    Automation,
    CallWebhook,
    DoNothing,
    EmitEvent,
    PauseAutomation,
    ResumeAutomation,
    RunCommand,
)
from collector.domain.events import RESOURCE_ID, RESOURCE_ROLE, ReceivedEvent, format_time
from collector.domain.secret_markers import redact, redact_url, scrub, secret_parts
from collector.domain.self_metrics import NoMetrics, SelfMetrics
from collector.errors import HeraldError, InvalidAutomation

log = logging.getLogger(__name__)

RESPONSE_BODY_LIMIT = 1000  # Prefect truncates webhook response bodies to 1000 characters
OUTPUT_LIMIT = 1000
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# Statuses worth retrying: the server may answer differently next time.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Stores events through the normal ingest path; raises HeraldError if they are rejected.
# The flag says the action is being resumed after a restart: events already stored are skipped.
EmitEvents = Callable[[list[dict[str, Any]], bool], Awaitable[None]]
# Pauses (False) or resumes (True) an automation on behalf of another one.
SetEnabled = Callable[[UUID, bool, Cause], Awaitable[Any]]


class StopSignal:
    """Set when an automation is paused or deleted: a run in flight makes no further
    attempt (the request already sent is not cut off; the receiver may have acted on it)."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or less when the signal is set; True if it was."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()


@dataclass(slots=True)
class ActionCall:
    """What one action run needs: the action, where it sits, and what triggered it."""

    automation: Automation
    firing: Firing
    action: Any
    where: str  # e.g. actions[0] — prefixes template error messages
    run_id: UUID
    event: ReceivedEvent | None  # the event templates see as `event`
    cause: Cause  # the cause of anything this action emits (loop guard)
    resumed: bool = False  # run again after a restart interrupted it
    stop: StopSignal | None = None  # set when the automation is paused or deleted

    @property
    def seen_event(self) -> ReceivedEvent | None:
        """The event the action is about: ``event``, else the firing's triggering event."""
        return self.event if self.event is not None else self.firing.triggering_event


@dataclass(slots=True)
class Outcome:
    status: str  # executed | failed | cancelled (stopped between attempts)
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    response_status: int | None = None
    targets: list[dict[str, str]] = field(default_factory=list)  # related in action events


class ActionFailed(Exception):
    """An action could not do its work; ``reason`` says why, ``detail`` adds facts."""

    def __init__(
        self,
        reason: str,
        detail: dict[str, Any] | None = None,
        response_status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or {}
        self.response_status = response_status


class ActionCancelled(ActionFailed):
    """The automation was paused or deleted while the action waited to try again."""


def backoff_delay(attempt: int, base: float = BACKOFF_BASE_SECONDS) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): base·2^attempt, capped."""
    return float(min(base * (2**attempt), BACKOFF_MAX_SECONDS))


def _looks_like_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def infer_automation(event: ReceivedEvent | None) -> UUID | None:
    """The first ``herald.automation.<id>`` resource of the event (primary, then related)."""
    if event is None:
        return None
    for labels in (event.resource, *event.related):
        found = automation_id_of(labels.get(RESOURCE_ID, ""))
        if found is not None:
            return found
    return None


class ActionExecutor:
    """Runs actions. One per runner: it shares the template cache and the HTTP client."""

    def __init__(
        self,
        config: AutomationsConfig,
        clock: Clock,
        *,
        http: httpx.AsyncClient,
        emit: EmitEvents,
        set_enabled: SetEnabled,
        templates: TemplateEngine | None = None,
        secrets: SecretSource | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        metrics: SelfMetrics | None = None,
    ) -> None:
        self._metrics = metrics or NoMetrics()
        self._config = config
        self._clock = clock
        self._http = http
        self._emit = emit
        self._set_enabled = set_enabled
        self._templates = templates or TemplateEngine(config.template_timeout_seconds)
        self._secrets = secrets or SecretSource(config.secrets_file)
        self._backoff_base = backoff_base

    async def run(self, call: ActionCall) -> Outcome:
        """Run one action; failures come back as a ``failed`` outcome, never raised. What the
        outcome records (reason, URL, response, argv) is scrubbed of every secret the action
        used: it goes into ``action_runs`` and the ``herald.automation.action.*`` event,
        which read tokens see."""
        used: list[str] = []
        outcome = await self._run(call, used)
        secrets = [part for value in used for part in secret_parts(value)]
        if secrets:
            outcome.reason = scrub(outcome.reason, secrets)
            outcome.detail = scrub(outcome.detail, secrets)
        return outcome

    async def _run(self, call: ActionCall, used: list[str]) -> Outcome:
        try:
            return await self._dispatch(call, used)
        except ActionFailed as exc:
            status = "cancelled" if isinstance(exc, ActionCancelled) else "failed"
            return Outcome(status, exc.reason, exc.detail, exc.response_status)
        except InvalidAutomation as exc:
            # A template that does not render: Prefect's "Template rendering failed".
            return Outcome(
                "failed", f"Template rendering failed: {exc}", {"template_error": str(exc)}
            )
        except HeraldError as exc:
            return Outcome("failed", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an action must never take the runner down
            log.exception("action %s of automation %s failed", call.where, call.automation.id)
            return Outcome("failed", f"unexpected error: {type(exc).__name__}: {exc}")

    async def _dispatch(self, call: ActionCall, used: list[str]) -> Outcome:
        action = call.action
        if isinstance(action, DoNothing):
            return Outcome("executed")
        if isinstance(action, CallWebhook):
            return await self._webhook(call, action, used)
        if isinstance(action, EmitEvent):
            return await self._emit_event(call, action)
        if isinstance(action, PauseAutomation | ResumeAutomation):
            return await self._pause_or_resume(call, action)
        if isinstance(action, RunCommand):
            return await self._command(call, action, used)
        raise ActionFailed(f"unknown action type {getattr(action, 'type', action)!r}")

    def _context(self, call: ActionCall, secrets: SecretsView | None = None) -> dict[str, Any]:
        # Templates see the automation with its secrets redacted: `{{ automation }}` must not
        # carry a webhook's token into an event or a request.
        public, _ = redact(call.automation.model_dump(mode="json"))
        return build_context(
            call.automation, call.firing, call.event, public=public, secrets=secrets
        )

    def _render(self, text: str, context: dict[str, Any], where: str) -> str:
        return self._templates.render(text, context, where)

    # -- call-webhook -----------------------------------------------------------------------

    def _default_body(self, call: ActionCall) -> str:
        event = call.seen_event
        return json.dumps(
            {
                "automation": {"id": str(call.automation.id), "name": call.automation.name},
                "firing": call.firing.to_dict(),
                "event": event.to_dict() if event is not None else None,
            }
        )

    async def _webhook(self, call: ActionCall, action: CallWebhook, used: list[str]) -> Outcome:
        # The action's own secret values (header values, URL userinfo and query values).
        used += redact({"actions": [action.model_dump(mode="json")]})[1]
        secrets = SecretsView(self._secrets)
        where = call.where

        def render_all() -> tuple[str, dict[str, str], str | None]:
            context = self._context(call, secrets)
            try:
                url = self._render(action.url, context, f"{where}.url")
                headers = {
                    k: self._render(v, context, f"{where}.headers.{k}")
                    for k, v in action.headers.items()
                }
                body = (
                    self._render(action.body, context, f"{where}.body")
                    if action.body is not None
                    else None
                )
            finally:
                used.extend(secrets.used)
            return url, headers, body

        url, headers, rendered_body = await self._templates.offload(
            render_all, where, (t for _, t in action.templates())
        )
        used += userinfo_forms(url)
        shown_url = redact_url(url)
        if not webhook_host_allowed(url, self._config.webhook_allow_hosts):
            host, port = host_port(url)
            raise ActionFailed(
                f"the webhook host {host or url!r} (port {port}) is not in "
                "automations.webhook_allow_hosts; the request was not sent",
                {"url": shown_url, "method": action.method},
            )
        body = rendered_body if rendered_body is not None else self._default_body(call)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = (
                "application/json" if _looks_like_json(body) else "text/plain; charset=utf-8"
            )
        # The server's config bounds what one automation may ask for.
        timeout = min(action.timeout_seconds, self._config.webhook_timeout_seconds)
        retries = min(action.retries, self._config.webhook_retries)
        content = body.encode() if action.method != "GET" else None
        last = "no attempt was made"
        status: int | None = None
        attempts = 0
        stop = call.stop
        for attempt in range(retries + 1):
            if attempt and stop is not None and stop.is_set():
                break
            attempts = attempt + 1
            sent = time.perf_counter()
            try:
                response = await self._http.request(
                    action.method, url, headers=headers, content=content, timeout=timeout
                )
            except httpx.TimeoutException:
                self._metrics.webhook_attempt("timeout", time.perf_counter() - sent)
                last = f"no answer within {timeout:g} s"
                status = None
            except httpx.HTTPError as exc:
                self._metrics.webhook_attempt("error", time.perf_counter() - sent)
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                status = None
            else:
                status = response.status_code
                self._metrics.webhook_attempt(f"{status // 100}xx", time.perf_counter() - sent)
                detail = {
                    "url": shown_url,
                    "method": action.method,
                    "status_code": status,
                    "attempts": attempts,
                    "response_body": response.text[:RESPONSE_BODY_LIMIT],
                    "response_headers": redact_headers(response.headers),
                }
                if response.is_success:
                    return Outcome("executed", detail=detail, response_status=status)
                last = f"the webhook answered {status} {response.reason_phrase}".rstrip()
                if status not in _RETRY_STATUSES:
                    raise ActionFailed(last, detail, status)
            if attempt < retries:
                delay = backoff_delay(attempt, self._backoff_base)
                if stop is None:
                    await asyncio.sleep(delay)
                elif await stop.sleep(delay):
                    break
        if stop is not None and stop.is_set() and attempts <= retries:
            raise ActionCancelled(
                f"{stop.reason}; no further attempt after {last} "
                f"({attempts} attempt{'s' if attempts != 1 else ''})",
                {
                    "url": shown_url,
                    "method": action.method,
                    "attempts": attempts,
                    "status_code": status,
                },
                status,
            )
        raise ActionFailed(
            f"{last} (after {attempts} attempt{'s' if attempts != 1 else ''})",
            {
                "url": shown_url,
                "method": action.method,
                "attempts": attempts,
                "status_code": status,
            },
            status,
        )

    # -- emit-event -------------------------------------------------------------------------

    async def _emit_event(self, call: ActionCall, action: EmitEvent) -> Outcome:
        where = call.where

        def render_all() -> tuple[str, Any, Any, Any]:
            # No `secrets` here: what an emitted event carries, read tokens see.
            context = self._context(call)
            engine = self._templates
            return (
                self._render(action.event, context, f"{where}.event"),
                engine.render_value(action.resource, context, f"{where}.resource"),
                engine.render_value(action.related, context, f"{where}.related"),
                engine.render_value(action.payload, context, f"{where}.payload"),
            )

        name, resource, related, payload = await self._templates.offload(
            render_all, where, (t for _, t in action.templates())
        )
        # The loop guard's mark: which automations led to this event (events.py).
        related = [*related, cause_related(call.automation, call.cause)]
        event_id = derived_id("herald.automation.emit", call.run_id)
        event = {
            "occurred": format_time(self._clock.now()),
            "event": name,
            "resource": resource,
            "related": related,
            "payload": payload,
            "id": str(event_id),
        }
        try:
            await self._emit([event], call.resumed)
        except HeraldError as exc:
            raise ActionFailed(f"the event was not stored: {exc}", {"event": event}) from None
        target = {RESOURCE_ID: f"herald.event.{event_id}", RESOURCE_ROLE: "emitted-event"}
        return Outcome(
            "executed", detail={"emitted_event": str(event_id), "event": name}, targets=[target]
        )

    # -- pause-automation / resume-automation -----------------------------------------------

    async def _pause_or_resume(
        self, call: ActionCall, action: PauseAutomation | ResumeAutomation
    ) -> Outcome:
        if action.source == "selected":
            target = action.automation_id
        else:
            target = infer_automation(call.seen_event)
        if target is None:
            raise ActionFailed("No automation could be inferred")
        enable = isinstance(action, ResumeAutomation)
        resource = {RESOURCE_ID: automation_resource_id(target), RESOURCE_ROLE: "target"}
        try:
            await self._set_enabled(target, enable, call.cause)
        except HeraldError as exc:
            raise ActionFailed(str(exc), {"automation_id": str(target)}) from None
        return Outcome(
            "executed",
            detail={"automation_id": str(target), "enabled": enable},
            targets=[resource],
        )

    # -- run-command ------------------------------------------------------------------------

    async def _command(self, call: ActionCall, action: RunCommand, used: list[str]) -> Outcome:
        if not self._config.allow_commands:
            raise ActionFailed(
                "run-command is turned off on this server "
                "(set automations.allow_commands = true to allow it)"
            )
        secrets = SecretsView(self._secrets)

        def render_all() -> list[str]:
            context = self._context(call, secrets)
            try:
                return [
                    self._render(arg, context, f"{call.where}.argv[{i}]")
                    for i, arg in enumerate(action.argv)
                ]
            finally:
                used.extend(secrets.used)

        argv = await self._templates.offload(render_all, call.where, action.argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ActionFailed(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}", {"argv": argv}
            ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), action.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ActionFailed(
                f"the command did not finish within {action.timeout_seconds:g} s (killed)",
                {"argv": argv},
            ) from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        code = proc.returncode if proc.returncode is not None else -1
        detail = {
            "argv": argv,
            "exit_code": code,
            "stdout": out.decode(errors="replace")[:OUTPUT_LIMIT],
            "stderr": err.decode(errors="replace")[:OUTPUT_LIMIT],
        }
        if code != 0:
            raise ActionFailed(f"the command exited with status {code}", detail, code)
        return Outcome("executed", detail=detail, response_status=code)
