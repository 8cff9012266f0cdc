"""The sandbox action templates render in (SPEC §7, Prefect P§6.6), and its limits.

jinja2's ``ImmutableSandboxedEnvironment`` plus Prefect's limits — ``range()`` at most 100
items, at most 10 ``for`` loops nested at most 2 deep — and Herald's own caps, since Prefect
leaves ``'x' * 10**9`` and ``9 ** 9 ** 9`` to exhaust the server: the size of what ``*``,
``**``, ``+``, ``%``, ``format``, ``join``, ``replace`` and friends would build is estimated
*before* it is built, integers may not grow without bound, and a render checks its deadline
as it goes. ``RenderLimit`` is what a template that hits one raises. How templates are parsed,
cached and rendered on threads is ``collector.automations.templates``.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from jinja2 import ChainableUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from pydantic import BaseModel

from collector.automations.secrets import SecretsView
from collector.automations.template_context import LabelDiver, TemplateEvent, TemplateResource
from collector.domain.events import format_time

MAX_RANGE = 100  # Prefect: jinja2.sandbox.MAX_RANGE = 100
MAX_FOR_LOOPS = 10  # Prefect: MAX_LOOP_COUNT
MAX_LOOP_NESTING = 2  # Prefect: MAX_NESTED_LOOP_DEPTH
# Herald's additions: Prefect leaves `'x' * 10**9` and `9 ** 9 ** 9` to exhaust the server.
MAX_REPEAT_LENGTH = 100_000
MAX_EXPONENT = 100
MAX_OUTPUT_CHARS = 1_000_000
# Integers may not grow past this many bits (``ns.x * ns.x`` in a loop doubles them).
MAX_INT_BITS = 100_000
MAX_JSON_INDENT = 16
MAX_LIPSUM = 100


class RenderLimit(SecurityError):
    """A template hit a size or time limit while rendering."""


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return rng


def _limited_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM or max > MAX_LIPSUM:
        raise RenderLimit(f"lipsum() is limited to {MAX_LIPSUM} paragraphs of {MAX_LIPSUM} words")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, TemplateEvent):
        return value.to_dict()
    if isinstance(value, TemplateResource):
        return dict(value.items())
    if isinstance(value, LabelDiver):
        return str(value)
    if isinstance(value, SecretsView):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _tojson(value: Any, indent: Any = None) -> str:
    # Jinja's own tojson HTML-escapes; webhook bodies want plain JSON (Prefect replaces it too).
    if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
        raise RenderLimit(f"tojson(indent) is limited to {MAX_JSON_INDENT} in templates")
    return json.dumps(value, default=_json_default, indent=indent)


# --------------------------------------------------------------------------------------------
# Size limits *while* rendering: every way a template can build a large string or number is
# checked before the work is done (a check of the result would come after the memory was
# taken and the time spent — `'x'|center(200000000)` is one C call).


def approx_len(value: Any, budget: int = MAX_OUTPUT_CHARS) -> int:
    """About how many characters ``str(value)`` has; stops counting past ``budget`` (so the
    walk itself is bounded). Containers count their items plus separators."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bytes | bytearray):
        return 4 * len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, float):
        return 24
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray | int | float) or item is None:
            total += approx_len(item) + 4
        elif isinstance(item, Mapping):
            total += 2
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            stack.extend(item)
        else:
            total += 64  # other objects (events, resources) print as names or ids
        if total > budget:
            return total
    return total


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise RenderLimit(
            f"{what} would make {size:,} characters or more; templates may produce at "
            f"most {MAX_OUTPUT_CHARS:,}"
        )


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes):
        return len(value)
    return 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?[a-zA-Z%]")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")


def format_widths(fmt: str) -> int:
    """The sum of every width and precision in a ``%`` or ``str.format`` format string (a
    ``*`` width counts as over the limit: its size is not known before formatting)."""
    total = 0
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for part in (width, precision):
            if part == "*":
                return MAX_OUTPUT_CHARS + 1
            if part:
                total += int(part)
    if _NESTED_SPEC.search(fmt):
        return MAX_OUTPUT_CHARS + 1  # '{0:{1}}': the width comes from an argument
    for spec in _BRACE_SPEC.findall(fmt):
        total += sum(int(d) for d in _DIGITS.findall(spec))
    return total


def _args_len(args: Any, kwargs: Mapping[str, Any]) -> int:
    budget = MAX_OUTPUT_CHARS
    return approx_len(list(args), budget) + approx_len(list(kwargs.values()), budget)


def _replace_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    text = str(s) if not isinstance(s, str | bytes) else s
    old_len = _int(old)
    new_len = _int(new)
    # `text` is str or bytes (a str subclass such as Markup counts only its own kind).
    hits = (
        len(text) + 1
        if old_len == 0
        else cast(Any, text).count(old)
        if isinstance(old, type(text))
        else 0
    )
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, new_len - old_len)


def _join_size(sep: Any, items: Any) -> int:
    seq = list(items) if not isinstance(items, list | tuple) else items
    if len(seq) > MAX_OUTPUT_CHARS:
        return len(seq)
    return approx_len(seq) + _int(sep) * max(0, len(seq) - 1)


def _estimate_filter(name: str, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    """The size a string-producing filter's result would have (0: not worth checking)."""
    base = approx_len(value)
    if name in ("center",):
        return max(base, _int(args[0] if args else kw.get("width", 80)))
    if name == "indent":
        width = _int(args[0] if args else kw.get("width", 4))
        lines = str(value).count("\n") + 1 if isinstance(value, str) else 1
        return base + width * lines
    if name == "wordwrap":
        width = max(1, _int(args[0] if args else kw.get("width", 79)))
        wrap = args[3] if len(args) > 3 else kw.get("wrapstring")
        return base + (base // width + 1) * max(1, _int(wrap))
    if name == "replace":
        old = args[0] if args else kw.get("old", "")
        new = args[1] if len(args) > 1 else kw.get("new", "")
        count = args[2] if len(args) > 2 else kw.get("count")
        return _replace_size(str(value), str(old), str(new), -1 if count is None else count)
    if name == "join":
        sep = args[0] if args else kw.get("d", "")
        if isinstance(value, str):
            return base + _int(sep) * len(value)
        try:
            return _join_size(sep, value)
        except TypeError:
            return base
    if name == "format":
        return len(str(value)) + format_widths(str(value)) + _args_len(args, kw)
    if name == "truncate":
        return base + _int(args[2] if len(args) > 2 else kw.get("end", ""))
    if name in ("batch", "slice"):
        return _int(args[0] if args else kw.get("linecount", kw.get("slices", 0)))
    return base


def _method_estimate(name: str, owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    """The size a string method's result would have (``'x'.center(10**9)``)."""
    base = len(owner)
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(base, _int(args[0] if args else kw.get("width", 0)))
    if name == "expandtabs":
        size = args[0] if args else kw.get("tabsize", 8)
        return base + int(owner.count("\t" if isinstance(owner, str) else b"\t")) * _int(size)
    if name == "join":
        return _join_size(owner, args[0]) if args else 0
    if name == "replace":
        return _replace_size(owner, *args[:3]) if len(args) >= 2 else base
    if name in ("format", "format_map"):
        return base + format_widths(str(owner)) + _args_len(args, kw)
    return 0


_LOOP_FILTER = "_herald_loop"
_SIZED_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "join", "replace", "format", "format_map"}
)
# Filters that make no text and whose result is no larger than their input (the rest turn
# their input into text, so its printed size is checked first).
_CHEAP_FILTERS = frozenset(
    {
        "abs", "attr", "count", "d", "default", "dictsort", "filesizeformat", "first",
        "float", "groupby", "int", "items", "last", "length", "list", "map", "max", "min",
        "random", "reject", "rejectattr", "reverse", "round", "select", "selectattr", "sort",
        "sum", "unique", "wordcount",
    }
)  # fmt: skip


class _LimitedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join (jinja2 writes a bare ``str_join``)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.limited_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
    """Prefect's sandbox without its process-wide ``MAX_RANGE`` patch, plus size and time
    limits that hold *while* rendering: ``*``, ``**``, ``+``, ``%``, ``~``, every filter,
    the string methods that pad or join, and what ``{{ … }}`` prints are checked before they
    build anything, and each of those checks also checks the render's deadline."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _LimitedCodeGenerator

    def __init__(self) -> None:
        super().__init__(undefined=ChainableUndefined, autoescape=False, finalize=self._finalize)
        self.globals["range"] = _limited_range
        self.globals["lipsum"] = _limited_lipsum
        self.filters["tojson"] = _tojson
        for name, func in list(self.filters.items()):
            self.filters[name] = self._limited_filter(name, func)
        self.filters[_LOOP_FILTER] = self._limited_loop
        # The deadline of the render running on this thread (renders run on several threads).
        self.local = threading.local()

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every `for` iterates through `_limited_loop`: a loop with an empty body calls no
        # other hook, and `{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}` over two
        # 100k-character strings is 10^10 iterations.
        root = super()._parse(source, name, filename)
        for loop in list(root.find_all(nodes.For)):
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno
            )
        return root

    def _limited_loop(self, iterable: Any) -> Iterator[Any]:
        check = self.check_deadline
        for i, item in enumerate(iterable):
            if not i % 64:
                check()
            yield item

    def check_deadline(self) -> None:
        deadline = getattr(self.local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise RenderLimit(
                f"the template did not finish within its {self.local.timeout:g} s time limit"
            )

    def _limited_filter(self, name: str, func: Any) -> Any:
        offset = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        cheap = name in _CHEAP_FILTERS

        @functools.wraps(func)
        def limited(*args: Any, **kwargs: Any) -> Any:
            self.check_deadline()
            if not cheap and len(args) > offset:
                value, rest = args[offset], args[offset + 1 :]
                if name == "join" and isinstance(value, Iterator):
                    # Measured before joining: a generator (`|map(...)`) is read once, here.
                    value = list(value)
                    args = (*args[:offset], value, *rest)
                _check_size(_estimate_filter(name, value, rest, kwargs), f"|{name}")
            return func(*args, **kwargs)

        return limited

    def _finalize(self, value: Any) -> Any:
        self.check_deadline()
        if not isinstance(value, str):
            _check_size(approx_len(value), "printing this value")
        return value

    def limited_concat(self, parts: tuple[Any, ...]) -> str:
        self.check_deadline()
        _check_size(sum(approx_len(p) for p in parts), "~")
        return "".join(map(str, parts))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.check_deadline()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str | bytes) and name in _SIZED_METHODS:
            _check_size(_method_estimate(name, owner, args, kwargs), f".{name}()")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.check_deadline()
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponents are limited to {MAX_EXPONENT} in templates")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if left.bit_length() * right > MAX_INT_BITS:
                raise RenderLimit(f"numbers are limited to {MAX_INT_BITS} bits in templates")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_REPEAT_LENGTH
                ):
                    raise SecurityError(
                        f"repetition is limited to {MAX_REPEAT_LENGTH} items in templates"
                    )
            if isinstance(left, str | list | tuple) and isinstance(right, int):
                _check_size(approx_len(left) * max(right, 0), "*")
            elif isinstance(right, str | list | tuple) and isinstance(left, int):
                _check_size(approx_len(right) * max(left, 0), "*")
            elif isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise RenderLimit(f"numbers are limited to {MAX_INT_BITS} bits in templates")
        if operator == "+" and isinstance(left, str | list | tuple):
            _check_size(approx_len(left) + approx_len(right), "+")
        if operator == "%" and isinstance(left, str):
            _check_size(len(left) + format_widths(left) + approx_len(right), "%")
        return super().call_binop(context, operator, left, right)


def loop_depth(node: nodes.Node, depth: int = 0) -> int:
    if isinstance(node, nodes.For):
        depth += 1
    return max((loop_depth(child, depth) for child in node.iter_child_nodes()), default=depth)


def maybe_template(text: str) -> bool:
    """Whether ``text`` holds Jinja syntax at all; plain strings are used as they are."""
    return "{{" in text or "{%" in text or "{#" in text


def uses_secrets(text: str, env: Sandbox | None = None) -> bool:
    """Whether a template refers to ``secrets`` (checked on save for actions that may not)."""
    if not maybe_template(text):
        return False
    try:
        root = (env or Sandbox()).parse(text)
    except TemplateSyntaxError:
        return False
    return any(n.name == "secrets" for n in root.find_all(nodes.Name))
