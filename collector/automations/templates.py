"""Action templates (SPEC §7, Prefect P§6.6): sandboxed Jinja2, validated on save.

This module owns how a template string becomes text — parsed and checked on save, compiled
(cached), rendered on threads of its own under a time limit, inside the sandbox and its limits
(``collector.automations.template_sandbox``) — and the errors: ``InvalidAutomation`` naming
the action field, both when an automation is saved (syntax and loop limits) and when a
template fails to render. What templates see (``event``, ``automation``, ``labels``,
``firing``, ``firings``, ``events``) is ``collector.automations.template_context``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from collector.automations.template_sandbox import (
    MAX_FOR_LOOPS,
    MAX_LOOP_NESTING,
    MAX_OUTPUT_CHARS,
    RenderLimit,
    Sandbox,
    loop_depth,
    maybe_template,
    uses_secrets,
)
from collector.domain.automations import Automation
from collector.errors import InvalidAutomation

T = TypeVar("T")

DEFAULT_RENDER_SECONDS = 2.0
RENDER_THREADS = 2
_COMPILED_CACHE_SIZE = 512


class TemplateEngine:
    """Validates and renders templates. One per process is enough: it caches compiled
    templates (bounded), and rendering does not mutate it otherwise.

    ``render`` bounds the output while rendering (size limits in the sandbox, and the
    streamed output is cut off past ``MAX_OUTPUT_CHARS``). ``offload`` runs a batch of
    renders on the engine's own small thread pool with a time limit, so a heavy template
    never stalls the event loop."""

    def __init__(self, timeout_seconds: float = DEFAULT_RENDER_SECONDS) -> None:
        self._env = Sandbox()
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()  # the compile cache is shared by the render threads
        self.timeout_seconds = timeout_seconds
        self._pool: ThreadPoolExecutor | None = None

    @property
    def env(self) -> Sandbox:
        return self._env

    def _parse(self, text: str, where: str) -> nodes.Template:
        try:
            root = self._env.parse(text)
        except TemplateSyntaxError as exc:
            raise InvalidAutomation(
                f"{where}: template syntax error on line {exc.lineno}: {exc.message}"
            ) from None
        loops = list(root.find_all(nodes.For))
        if len(loops) > MAX_FOR_LOOPS:
            raise InvalidAutomation(
                f"{where}: the template contains {len(loops)} for loops; "
                f"at most {MAX_FOR_LOOPS} are allowed"
            )
        depth = loop_depth(root)
        if depth > MAX_LOOP_NESTING:
            raise InvalidAutomation(
                f"{where}: the template nests for loops {depth} deep; "
                f"at most {MAX_LOOP_NESTING} levels are allowed"
            )
        return root

    def validate(self, text: str, where: str = "template") -> None:
        """Raise ``InvalidAutomation`` naming ``where`` if ``text`` is not a valid template."""
        if maybe_template(text):
            self._parse(text, where)

    def _compile(self, text: str, where: str) -> Any:
        with self._lock:
            compiled = self._compiled.get(text)
        if compiled is None:
            self._parse(text, where)
            compiled = self._env.from_string(text)
            with self._lock:
                if len(self._compiled) >= _COMPILED_CACHE_SIZE:
                    self._compiled.pop(next(iter(self._compiled)))
                self._compiled[text] = compiled
        return compiled

    def render(self, text: str, context: Mapping[str, Any], where: str = "template") -> str:
        """Render ``text``; any failure is ``InvalidAutomation`` naming ``where``. Inside
        ``offload`` the render's deadline applies; called directly, only the size limits."""
        if not maybe_template(text):
            return text
        compiled = self._compile(text, where)
        env = self._env
        parts: list[str] = []
        size = 0
        try:
            for chunk in compiled.generate(dict(context)):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderLimit(
                        f"the rendered template passed the limit of {MAX_OUTPUT_CHARS:,} "
                        "characters (rendering stopped there)"
                    )
                parts.append(chunk)
                env.check_deadline()
        except RenderLimit as exc:
            raise InvalidAutomation(f"{where}: {exc}") from None
        except Exception as exc:  # user code: every failure is the template's, not ours
            raise InvalidAutomation(
                f"{where}: template rendering failed: {type(exc).__name__}: {exc}"
            ) from None
        return "".join(parts)

    def render_value(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        """Render every string inside a JSON-like value (emit-event payloads, labels)."""
        if isinstance(value, str):
            return self.render(value, context, where)
        if isinstance(value, dict):
            return {k: self.render_value(v, context, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_value(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    async def offload(
        self, work: Callable[[], T], where: str = "template", texts: Iterable[str] | None = None
    ) -> T:
        """Run ``work`` (a function that renders) on the engine's render threads under the
        time limit. A thread cannot be killed: the limit is enforced by the deadline checks
        in the sandbox and in ``render``, and the caller stops waiting shortly after it in any
        case (a C-level step that ignores the deadline then finishes in the background).
        ``texts``: the templates ``work`` renders; when none is a template (plain strings),
        ``work`` runs here at once — there is nothing to bound."""
        if texts is not None and not any(maybe_template(t) for t in texts):
            return work()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="herald-render")
        timeout = self.timeout_seconds
        env = self._env
        started: list[float] = []

        def bounded() -> T:
            started.append(time.monotonic())
            env.local.timeout = timeout
            env.local.deadline = started[0] + timeout
            try:
                return work()
            finally:
                env.local.deadline = None

        future = asyncio.get_running_loop().run_in_executor(self._pool, bounded)
        # The deadline counts from when the render starts (it may wait for a thread); the
        # caller gives up one second past it even if the render has not noticed.
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout + 1.0)
            except TimeoutError:
                if started and time.monotonic() - started[0] > timeout + 1.0:
                    raise InvalidAutomation(
                        f"{where}: the template did not finish within its {timeout:g} s time limit"
                    ) from None

    def close(self) -> None:
        """Stop the render threads (a render still running finishes on its own)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def validate_template(text: str, where: str = "template") -> None:
    """Check one template's syntax and loop limits; ``InvalidAutomation`` names ``where``."""
    TemplateEngine().validate(text, where)


def validate_automation_templates(automation: Automation) -> None:
    """Check every template of an automation (call when it is saved). ``{{ secrets.NAME }}``
    is for call-webhook and run-command only: an emitted event is readable by read tokens."""
    engine = TemplateEngine()
    for where, text in automation.templates():
        engine.validate(text, where)
    for field, i, action in automation.all_actions():
        if action.type != "emit-event":
            continue
        for where, text in action.templates():
            if uses_secrets(text, engine.env):
                raise InvalidAutomation(
                    f"{field}[{i}].{where}: secrets are not available to emit-event (the "
                    "event would carry them to every reader); use them in call-webhook or "
                    "run-command"
                )


def render_template(text: str, context: Mapping[str, Any], where: str = "template") -> str:
    """Render one template with a throwaway engine (prefer a shared ``TemplateEngine``)."""
    return TemplateEngine().render(text, context, where)
