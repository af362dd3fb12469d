"""Expression and template evaluation in a jinja2 sandbox.

Definitions use jinja syntax in two ways:

* expressions without braces, e.g. ``steps.check.output.status_code == 200``, evaluated with
  :func:`evaluate`;
* templates inside JSON-like values, rendered with :func:`render`. A string that is exactly one
  ``{{ expr }}`` yields the expression's native value; any other string with template syntax
  renders to a string.

Evaluation runs inside workflow code, so the environment is deterministic (no clock, no random)
and bounded (ranges, repetition, exponentiation and formatting widths are limited). Python's
``eval`` is never used.

``${secret:NAME}`` references are not jinja syntax: they are resolved only inside activities, and
only where the definition's author wrote them, in a template's text. Data is inert
(:mod:`interpreter.inert` escapes a reference a value holds), and so is what a template makes of
data: two values written side by side (``${sec`` and ``ret:NAME}``), a filter that strips what
separated the characters, a loop over them. A rendered string's references are therefore the
author's, marked before rendering and put back after it; every other ``${secret:`` in the output is
escaped (``$${secret:``, text). A reference an expression could take apart or rebuild (inside
``{{ }}`` or ``{% %}``, or in the text of a ``set``, ``filter``, ``macro``, ``call`` or ``block``
body, which an expression reads back as a value) is refused by :func:`check_template` and, in a
definition stored before that check, rendered as text.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import os  # noqa: TID251 (os.register_at_fork only: _forked)
import re
import threading  # noqa: TID251 (_at_fixed_depth: compiles run on a thread of their own, waited for)
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from concurrent.futures import ThreadPoolExecutor  # noqa: TID251 (_at_fixed_depth)

# The one random draw of the interpreter, made once per process: it never reaches a rendered value
# (see _REFERENCE_OPEN), so renders stay deterministic across processes and replays.
from secrets import token_hex  # noqa: TID251
from typing import Any, Generic, TypeVar, cast

import jinja2
import jinja2.exceptions
import jinja2.filters
import jinja2.lexer
from jinja2 import StrictUndefined, Undefined, nodes, pass_environment, pass_eval_context
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from interpreter.durations import parse_duration
from interpreter.inert import SECRET_REF_START as _SECRET_START
from interpreter.inert import seal, sub_references
from interpreter.sizes import INT_MAX_BITS

__all__ = [
    "MAX_DEFINITION_TEMPLATE_TOKENS",
    "MAX_RENDERED_BYTES",
    "MAX_RESULT_INT_BITS",
    "OversizedValueError",
    "TemplateError",
    "TemplateTokensError",
    "UncountedWorkError",
    "UnreadableValueError",
    "bounded_template_tokens",
    "check_expression",
    "check_template",
    "contains_template",
    "evaluate",
    "last_evaluation_work",
    "last_uncounted_work",
    "last_work",
    "render",
    "render_html",
    "template_strings",
    "template_token_budget",
    "template_tokens_watch",
    "unbounded_sizes",
    "unbounded_work",
    "unchecked_values",
]

MAX_RENDERED_BYTES = 256 * 1024
"""Largest rendered string (UTF-8 bytes) accepted from a template."""

MAX_RESULT_CHARS = 1024 * 1024
"""Largest result of one render or evaluation, measured on its structure: the characters of every
string plus one per other value, a string referenced many times counted every time (that is how
often it would be serialised)."""

WORK_BUDGET = 100_000
"""Operations one render or evaluation may spend: each loop iteration, call, filter or test
application, comparison, output and arithmetic, plus the length of what it reads or builds (strings
per 16 characters). On this project's 2-core machines, busy, the costliest operations found
(``map``/``join`` chains) spent the whole budget in about 0.3 s, well under the workflow task's
2-second deadlock limit."""

_MAX_ITEMS = 100_000
_MAX_RANGE = 10_000
_MAX_EXPONENT = 100
_MAX_POWER_BITS = 100_000
_SINGLE_OPERATION_BUDGET = 2 * 1024 * 1024
"""Work one render may spend where C code does it in one call that the work budget does not see:
characters of values turned into text (``~``, ``| string``, ``join``, ``%``...) or compared, every
shared reference counted (:func:`_text_size`); list concatenation in ``| sum``; arithmetic on
integers of more than 1,024 bits (:func:`_arith`). A separate count: the work budget, which hosts
add up, stays as it was."""
_BIG_INT_LIMBS = 16
"""Integers of more than this many 64-bit limbs (1,024 bits) cost their arithmetic."""
MAX_RESULT_INT_BITS = INT_MAX_BITS
"""Largest integer (in bits: about 3,900 digits) a template may return. JSON readers refuse longer
numbers (pydantic, and Python's own ``int`` parsing, past 4,300 digits): a run that kept one
(``{{ (10**100)**50 }}``) returned it in a fan-out slice's or a subflow's result that its parent
could not decode, its workflow task failing for ever (found by an attacker's probe), and its own
result and ``status`` could not be read. Numbers within a template are not bounded by it (a
``%`` of a large power is fine): only what the template returns."""

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone UTF-16 surrogate (a jinja literal ``'\\ud800'`` makes one): UTF-8 cannot write it, and
the converter refused a value holding one, the workflow task failing for ever (found by a review)."""


class _Unreadable(Exception):
    """Raised for a value a template returns that JSON readers or writers refuse."""


_checked_values: contextvars.ContextVar[bool] = contextvars.ContextVar("wfa_checked_values", default=True)


_T = TypeVar("_T")


@contextlib.contextmanager
def _scoped(variable: contextvars.ContextVar[_T], value: _T) -> Iterator[_T]:
    """Sets ``variable`` to ``value`` within the block (yielding it), as it was after."""
    token = variable.set(value)
    try:
        yield value
    finally:
        variable.reset(token)


@contextlib.contextmanager
def unchecked_values() -> Iterator[None]:
    """Templates evaluated in it return integers of any size and lone surrogates, as before
    :class:`UnreadableValueError` (the engine renders so for a run recorded before the check)."""
    with _scoped(_checked_values, False):
        yield


_bounded_sizes: contextvars.ContextVar[bool] = contextvars.ContextVar("wfa_bounded_sizes", default=True)


@contextlib.contextmanager
def unbounded_sizes() -> Iterator[None]:
    """Templates evaluated in it multiply integers of any size and turn values of any size into
    text, as before :class:`OversizedValueError` (the engine renders so for a run recorded before
    the check). Found by an attacker's probe: ``ns.a = ns.a * ns.a`` in a loop (each squaring
    charged one operation) and ``{% set a = [a]*10 %}`` nested four times, then ``| string`` (the
    budget saw 50 operations, the text had 100 million items: 35 s in one C call, 1.9 GB), each
    holding a worker's workflow task past its deadlock limit, for ever."""
    with _scoped(_bounded_sizes, False):
        yield


_bounded_arguments: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "wfa_bounded_arguments", default=True
)


@contextlib.contextmanager
def unbounded_arguments() -> Iterator[None]:
    """Templates evaluated in it read filters' and tests' arguments, and let them multiply text,
    as before :class:`ArgumentSizeError` (the engine renders so for a run recorded before the
    check). Found by an attacker's probe: ``select('in', input.b)`` scanned the whole list for
    every item, charged as nothing (30,000 by 80,000 items held the workflow task 8 s, every
    attempt), and ``tojson(1000000)``, ``join`` with a long separator, ``'{0:99999}' * 10000``
    formatted, built gigabytes of text before its size was checked."""
    with _scoped(_bounded_arguments, False):
        yield


_bounded_work: contextvars.ContextVar[bool] = contextvars.ContextVar("wfa_bounded_work", default=True)


@contextlib.contextmanager
def unbounded_work() -> Iterator[None]:
    """Templates evaluated in it do, uncounted, the work :class:`UncountedWorkError` refuses, as
    before it (the engine renders so for a run recorded before the check). Found by an attacker's
    probe: ``'x' | replace('y', c)`` with ``c`` a list nested four times (100 shared references per
    level) built a gigabyte of text for the argument, and a fifth level ran out of memory; ``a is
    eq(b)`` and ``[a, b] | sort`` compared such values for 5.6 s in one call; and ``range(10000) |
    map('center', 100000)`` made a gigabyte of padding, each call within its own limit."""
    with _scoped(_bounded_work, False):
        yield


_CONTAINERS = (
    list,
    tuple,
    dict,
    set,
    frozenset,
    Mapping,
    KeysView,
    ValuesView,
    ItemsView,
    jinja2.utils.Namespace,
)
"""What :func:`_text_size` walks into (a ``namespace`` and dict views too: their text holds their
items; a review found them passed over)."""


def _items_of(item: Any) -> list[Any]:
    if isinstance(item, jinja2.utils.Namespace):
        attrs: dict[str, Any] = item._Namespace__attrs
        return [*attrs.keys(), *attrs.values()]
    if isinstance(item, Mapping):
        return [*item.keys(), *item.values()]
    if isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
        return list(item)
    return []


def _text_size(value: Any, what: str = "turned into text") -> None:
    """Refuses turning ``value`` into text when its characters (as :func:`_to_json` counts them:
    every string's length plus one per other value, a value referenced many times counted every
    time) pass :data:`MAX_RESULT_CHARS`. The walk stops there, so it costs at most that many
    steps; what it visits is also counted against the render's :data:`_SINGLE_OPERATION_BUDGET`."""
    if not isinstance(value, _CONTAINERS) or not _bounded_sizes.get():
        return
    size = _walked_chars(value)
    if size is None:
        raise _Oversized(
            f"a value of more than {MAX_RESULT_CHARS:,} characters (every shared reference counted)"
            f" would be {what}"
        )
    _Budget.single_operations(size)


def _uncounted(value: Any, what: str, *, counted: int = 0, chars_per_step: int = 1) -> None:
    """Refuses what a filter, test or method does with ``value`` in one call that no other budget
    counts (``what``: "turned into text", an argument's; "compared", in a test or a sorting
    filter) when ``value`` holds more than :data:`MAX_RESULT_CHARS` characters as
    :func:`_text_size` counts them; what it holds is counted as uncounted work
    (:meth:`_Budget.uncounted`), but for what another count took already (``counted``: a flat
    list's items, which reading it cost). Not in :func:`unbounded_work`."""
    if not isinstance(value, _CONTAINERS) or not _bounded_work.get():
        return
    size = _walked_chars(value, chars_per_step)
    if size is None:
        raise _Overworked(
            f"a value of more than {MAX_RESULT_CHARS:,} characters (every shared reference counted)"
            f" would be {what}"
        )
    _Budget.uncounted(size - counted, what)


def _compared(value: Any, *, counted: int = 0) -> None:
    """:func:`_uncounted` for a value compared or hashed as a whole: its items each a step, its
    strings' characters 16 to a step, as reading text costs (a review: every character of a list of
    25 allowed names, read for each of 10,000 items, refused a filter that took 20 ms)."""
    _uncounted(value, "compared", counted=counted, chars_per_step=_CHARS_PER_OPERATION)


def _digits_work(value: Any) -> None:
    """Counts turning the large integers in ``value`` into text (quadratic in their digits: a
    probe's 45,000 numbers of 4,209 digits, each counted one character, took 8 s), as uncounted
    work. Not in :func:`unbounded_work`."""
    if not _bounded_work.get():
        return
    stack: list[Any] = [value]
    seen = 0
    while stack and seen <= MAX_RESULT_CHARS:
        item = stack.pop()
        seen += 1
        if isinstance(item, int) and not isinstance(item, bool):
            bits = item.bit_length()
            if bits > 64 * _BIG_INT_LIMBS:
                digits = bits * 3 // 10
                _Budget.uncounted(max(digits, digits * digits // 4096), "large numbers turned into text")
        elif isinstance(item, _CONTAINERS) and not isinstance(item, str):
            stack.extend(_items_of(item))


def _big_int_work(*values: Any) -> None:
    """Counts arithmetic a test or a filter does on integers of more than :data:`_BIG_INT_LIMBS`
    limbs, as :func:`_arith` does for operators (a probe: ``x is divisibleby(y)`` of 95,000-bit
    numbers, 1,000 times, 2.3 s), as uncounted work."""
    if not _bounded_work.get():
        return
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            limbs = value.bit_length() // 64 + 1
            if limbs > _BIG_INT_LIMBS:
                _Budget.uncounted(limbs * limbs // 64, "arithmetic on large numbers")


def _formatted_work(fields: int, arguments: Any) -> None:
    """Counts what formatting ``fields`` fields with ``arguments`` makes: each field may write the
    longest argument (a probe: 8,192 fields of a 65,536-character string, 535 MB)."""
    if not _bounded_work.get() or not fields:
        return
    longest = 1
    for argument in arguments:
        if isinstance(argument, str):
            longest = max(longest, len(argument))
        elif isinstance(argument, _CONTAINERS):
            longest = max(longest, _walked_chars(argument) or MAX_RESULT_CHARS)
    _Budget.uncounted(fields * longest, "format fields")


def _walked_chars(value: Any, chars_per_step: int = 1) -> int | None:
    """The characters of ``value`` as :func:`_text_size` counts them (with ``chars_per_step``, a
    string's characters that many to a step), or None past :data:`MAX_RESULT_CHARS` (the walk
    stops there)."""
    size = 0
    stack: list[Any] = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is list or kind is tuple:  # (the common cases first, without isinstance)
            size += 1
            extend(item)
        elif kind is str:
            size += 2 + len(item) // chars_per_step
        elif kind is int or kind is float or kind is bool or item is None:
            size += 1
        elif kind is dict:
            size += 1
            extend(item.keys())
            extend(item.values())
        elif isinstance(item, str):
            size += 2 + len(item) // chars_per_step
        else:
            size += 1
            if isinstance(item, _CONTAINERS):
                extend(_items_of(item))
        if size > MAX_RESULT_CHARS:
            return None
    return size


def _arith(*operands: Any) -> None:
    """Counts arithmetic on integers of more than :data:`_BIG_INT_LIMBS` limbs as the square of
    their size (division and multiplication are quadratic; a review found ``x // y`` of 99,000-bit
    numbers in a loop charged as nothing: 39 s)."""
    if not _bounded_sizes.get():
        return
    for operand in operands:
        if isinstance(operand, int):
            limbs = operand.bit_length() // 64 + 1
            if limbs > _BIG_INT_LIMBS:
                _Budget.single_operations(limbs * limbs // 64)


def _bytes_refused(name: str) -> _Oversized:
    return _Oversized(
        f"{name}() makes bytes, which templates do not handle: their sizes are not bounded"
        " (found by a review); work on the text instead"
    )


def _check_text(text: str) -> None:
    """Refuses ``text`` holding a lone surrogate (:data:`_SURROGATE`), unless in :func:`unchecked_values`."""
    if not text.isascii() and _SURROGATE.search(text) and _checked_values.get():
        raise _Unreadable("a lone surrogate character (UTF-8 cannot write it; a JSON reader refuses it)")


def _readable_text(source: str, text: str) -> str:
    """``text``, a template's whole rendered text, checked as :func:`_check_text` does."""
    try:
        _check_text(text)
    except _Unreadable as exc:
        raise UnreadableValueError(source, str(exc)) from None
    return text


_CACHE_SIZE = 4096
_SMALL_SOURCE_CHARS = 512
_LARGE_CACHE_SIZE = 32
"""A process caches what it compiled (and counted) of :data:`_CACHE_SIZE` sources of at most
:data:`_SMALL_SOURCE_CHARS` characters, and of :data:`_LARGE_CACHE_SIZE` longer ones. One cache of
4,096 sources of any size kept a 1.9 MB text template in 4.2 MB and an 8 KiB one of dense tokens in
0.5 to 0.9 MB: a tenant's runs of distinct such templates could take a worker past 17 GB (found by
attackers' probes). A dense 512-character template takes about 41 KB compiled."""

_R = TypeVar("_R")


class _SourceCache(Generic[_R]):
    """``fn`` of a source (and other arguments), cached in two LRU caches by the source's length
    (see :data:`_SMALL_SOURCE_CHARS`); thread-safe as ``functools.lru_cache`` is."""

    def __init__(self, fn: Callable[..., _R]) -> None:
        functools.update_wrapper(self, fn)
        self._small = functools.lru_cache(maxsize=_CACHE_SIZE)(fn)
        self._large = functools.lru_cache(maxsize=_LARGE_CACHE_SIZE)(fn)

    def __call__(self, source: str, *rest: Any) -> _R:
        cache = self._small if len(source) <= _SMALL_SOURCE_CHARS else self._large
        return cache(source, *rest)

    def misses(self) -> int:
        """Calls that ran ``fn`` (a source not in its cache)."""
        return self._small.cache_info().misses + self._large.cache_info().misses

    def entries(self) -> tuple[int, int]:
        """The sources cached: small ones, large ones."""
        return self._small.cache_info().currsize, self._large.cache_info().currsize


MAX_DEFINITION_TEMPLATE_TOKENS = 10_000
"""Tokens (names, operators, literals, tags, runs of text: what jinja's parser reads) that the
templates and expressions of one definition may hold together; more is refused before any is
compiled. Compiling costs about 20 to 40 microseconds of CPU a token, in whichever process reads the
definition: the worker, at the start of every run on a worker that has not compiled it yet (its
first workflow task, holding a thread of the worker's), and the clients and gateway that load it.
A definition of 1.5 MB of templates (``{{ input.a }}x`` repeated) took 24 s to read, and a worker 16 s
of a workflow task, once for every such definition (found by an attacker's probe). Each template or
expression counts at least :data:`_SOURCE_TOKENS`, and one the definition holds twice counts once
(it is compiled once). The examples' definitions hold 20 to 404 tokens in 2 to 31 templates;
10,000 tokens compile in 0.2 to 0.5 s on an idle machine, up to 0.94 s at a load of 5."""


class _TokenBudget:
    """The tokens a definition's templates and expressions hold, counted as they are checked."""

    __slots__ = ("exceeded", "seen", "spent")

    def __init__(self) -> None:
        self.spent = 0
        self.exceeded = False
        self.seen: set[tuple[str, bool]] = set()
        """The sources counted, as templates (False) or expressions (True): the same text is
        compiled once as each (a review: text counted as a template went uncounted as an expression)."""


_token_budget: contextvars.ContextVar[_TokenBudget | None] = contextvars.ContextVar(
    "wfa_template_token_budget", default=None
)
_token_watch: contextvars.ContextVar[_TokenBudget | None] = contextvars.ContextVar(
    "wfa_template_token_watch", default=None
)
_bounded_tokens: contextvars.ContextVar[bool] = contextvars.ContextVar("wfa_bounded_tokens", default=False)


@contextlib.contextmanager
def template_token_budget() -> Iterator[None]:
    """Templates and expressions checked in it share one count of tokens, at most
    :data:`MAX_DEFINITION_TEMPLATE_TOKENS`, when checked in :func:`bounded_template_tokens`
    (``interpreter.model.parse_definition`` reads a definition in one, the worker a run's input)."""
    with _scoped(_token_budget, _TokenBudget()):
        yield


@contextlib.contextmanager
def template_tokens_watch() -> Iterator[_TokenBudget]:
    """Yields a record whose ``exceeded`` tells whether a check in it refused templates for their
    tokens (:class:`TemplateTokensError`; a model's validation error does not say which error)."""
    watch = _TokenBudget()
    with _scoped(_token_watch, watch):
        yield watch


@contextlib.contextmanager
def bounded_template_tokens() -> Iterator[None]:
    """Templates and expressions checked in it are bounded in tokens (:class:`TemplateTokensError`):
    where a definition is read as its author wrote it (``interpreter.model.parse_definition``, which
    every client, the registry and the gateway read through) and as a run's input in the worker.
    Elsewhere (the worker reading a definition back from a recorded activity result or a run
    recorded before the bound) they are compiled whatever their tokens, as before."""
    with _scoped(_bounded_tokens, True):
        yield


_SOURCE_TOKENS = 10
"""What a template or expression counts at the least, whatever its tokens: compiling one costs
about 0.3 to 0.6 ms whatever it holds (9,990 ``when`` expressions of one token each took 5.6 s)."""
_MAX_NUMBER_CHARS = 100
"""The longest number literal a template may write: jinja computes constant expressions as it
compiles, and ``0x<1.3 million f> is divisibleby 0x<660,000 e>`` (six tokens) took 12 s to read."""


@_SourceCache
def _tokens(source: str, expression: bool) -> int:
    """The tokens jinja's lexer reads in ``source`` (every one but whitespace: comments and
    ``raw`` markers too), counted up to one past :data:`MAX_DEFINITION_TEMPLATE_TOKENS`, where the
    lexing stops; -1 for a number literal longer than :data:`_MAX_NUMBER_CHARS`. A syntax error
    ends the count: compiling reports it."""
    count = 0
    stream = _ENV.lexer.tokeniter(source, None, None, "variable" if expression else None)
    try:
        for _, kind, value in stream:
            if kind == "whitespace":
                continue
            if kind in ("integer", "float") and len(value) > _MAX_NUMBER_CHARS:
                return -1
            count += 1
            if count > MAX_DEFINITION_TEMPLATE_TOKENS:
                break
    except jinja2.exceptions.TemplateSyntaxError:
        pass
    return count


def _charge_tokens(source: str, *, expression: bool) -> bool:
    """Counts ``source``'s tokens (at least :data:`_SOURCE_TOKENS`; a source the budget counted
    already, not again: it is compiled once) into the budget in force; False when it is not to be
    compiled (a template before it went over, and was refused).

    Raises:
        TemplateTokensError: ``source`` takes the count over :data:`MAX_DEFINITION_TEMPLATE_TOKENS`
            (outside a budget: holds more tokens than that alone), or writes a number longer than
            :data:`_MAX_NUMBER_CHARS`.
    """
    if not _bounded_tokens.get():
        return True
    budget = _token_budget.get()
    if budget is not None and (budget.exceeded or (source, expression) in budget.seen):
        return not budget.exceeded  # refused already: one error says it, and nothing more is compiled
    count = _tokens(source, expression)
    if count < 0:
        detail = (
            f"a number of more than {_MAX_NUMBER_CHARS} characters: jinja computes constants as it"
            " compiles, so such numbers are refused; pass large numbers in the run's input"
        )
    elif budget is None:
        if count <= MAX_DEFINITION_TEMPLATE_TOKENS:
            return True
        detail = f"the template holds more than {MAX_DEFINITION_TEMPLATE_TOKENS:,} tokens"
    else:
        budget.seen.add((source, expression))
        budget.spent += max(count, _SOURCE_TOKENS)
        if budget.spent <= MAX_DEFINITION_TEMPLATE_TOKENS:
            return True
        detail = (
            f"the definition's templates and expressions hold more than"
            f" {MAX_DEFINITION_TEMPLATE_TOKENS:,} tokens together (names, operators, literals, tags,"
            f" comments and runs of text; each template or expression counts at least {_SOURCE_TOKENS}),"
            " more than a worker compiles for a run; split the definition (subflow steps) or move"
            " text into the run's input"
        )
    if budget is not None:
        budget.exceeded = True
    watch = _token_watch.get()
    if watch is not None:
        watch.exceeded = True
    raise TemplateTokensError(source, detail)


_SHOWN_SOURCE_CHARS = 200

_TEMPLATE_MARKERS = ("{{", "{%")
_COMPILED_MARKERS = ("{{", "{%", "{#")
"""What makes :func:`check_template` compile a text (a lone comment tag too: its syntax is checked,
as it always was); other text renders as it is and is neither compiled nor counted."""
_DOLLAR_BEFORE_TAG = re.compile(r"\$\{[{%]")
_AUTHOR_REFERENCE = re.compile(r"(\$?)\$\{secret:([^}\ue000\ue001]*)\}")
"""A reference in a template's text (``$${secret:`` is the escaped, literal form: left as it is)."""
_REFERENCE_OPEN = f"\ue000{token_hex(16)}:"
"""Marks an author's reference in a compiled template: ``${secret:NAME}`` in the template's text is
compiled as ``<open>NAME\ue001`` and put back after rendering. Data cannot write the mark (the
process draws it at random and it is never rendered: it stands only in text that goes straight to
the output, see :func:`_mark_references`), so a reference data forms is told from the author's."""
_REFERENCE_MARK = re.compile(re.escape(_REFERENCE_OPEN) + r"([^\ue000\ue001]*)\ue001")
_READ_BACK = (nodes.AssignBlock, nodes.FilterBlock, nodes.Macro, nodes.CallBlock, nodes.Block)
"""Bodies whose output an expression can read as a value (and so take apart)."""
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{([^{}]*)\}")
_DIGITS = re.compile(r"\d+")


class TemplateError(ValueError):
    """A template or expression failed to parse or evaluate.

    Attributes:
        source: The full template or expression text.
        detail: What went wrong, e.g. ``'x' is undefined``.
    """

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(source, detail)
        self.source = source
        self.detail = detail

    def __str__(self) -> str:
        shown = self.source
        if len(shown) > _SHOWN_SOURCE_CHARS:
            shown = shown[:_SHOWN_SOURCE_CHARS] + "..."
        return f"template error in '{shown}': {self.detail}"


class UnreadableValueError(TemplateError):
    """A template returned a value no JSON reader takes back: an integer over
    :data:`MAX_RESULT_INT_BITS`, or a string with a lone surrogate."""


class TemplateTokensError(TemplateError):
    """A definition's templates and expressions hold more tokens than
    :data:`MAX_DEFINITION_TEMPLATE_TOKENS`: refused before they are compiled."""


class OversizedValueError(TemplateError):
    """A template would do work its budget does not see, in single operations: a product of
    integers over :data:`_MAX_POWER_BITS` bits, text made of (or a comparison of) a value larger
    than :data:`MAX_RESULT_CHARS` counted with every shared reference, a ``| sum`` past
    :data:`_MAX_ITEMS` items, bytes, or more such work than :data:`_SINGLE_OPERATION_BUDGET` (see
    :func:`unbounded_sizes`)."""


class _Oversized(SecurityError):
    """Raised inside an evaluation for :class:`OversizedValueError`."""


class ArgumentSizeError(TemplateError):
    """A template whose filters' and tests' arguments would make work or text its budgets did not
    see: a test such as ``in`` reading a long list for every item, past
    :data:`_SINGLE_OPERATION_BUDGET` steps, or text of more than :data:`MAX_RESULT_CHARS`
    characters made by a separator, an indent, a wrap string, a translation table or format
    widths (see :func:`unbounded_arguments`)."""


class _OverArgued(SecurityError):
    """Raised inside an evaluation for :class:`ArgumentSizeError`."""


def _made_text(size: int, what: str) -> None:
    """Refuses a call whose arguments would make ``size`` characters of text, past
    :data:`MAX_RESULT_CHARS`, before it makes them (unless in :func:`unbounded_arguments`); what
    it makes is counted as uncounted work (:meth:`_Budget.uncounted`)."""
    if size > MAX_RESULT_CHARS and _bounded_arguments.get():
        raise _OverArgued(
            f"{what} would make text of {size:,} characters, more than the limit of {MAX_RESULT_CHARS:,}"
        )
    _Budget.uncounted(size, what)


class UncountedWorkError(TemplateError):
    """A template whose filters, tests or methods would do work no other budget sees (see
    :func:`unbounded_work`): a value of more than :data:`MAX_RESULT_CHARS` characters turned into
    text as an argument (``replace``'s, ``join``'s, ``format``'s, ``tojson``'s indent...) or
    compared in a test or a sorting filter (``is eq``, ``select('in', ...)``, ``sort``, ``max``,
    a list's ``count``...), or, in one render, more than :data:`_SINGLE_OPERATION_BUDGET`
    characters or items made by calls that pad, indent, batch or replace (``map('center',
    100000)``) or values of that size compared or turned into text so."""


class _Overworked(SecurityError):
    """Raised inside an evaluation for :class:`UncountedWorkError`."""


class _Undefined(StrictUndefined):
    """Strict undefined whose messages name the missing key and the keys that do exist."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        obj = self._undefined_obj
        if not self._undefined_hint and isinstance(obj, Mapping) and isinstance(name, str):
            keys = sorted(str(key) for key in obj)
            if not keys:
                return f"{name!r} is undefined (no keys available)"
            listed = ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "")
            return f"{name!r} is undefined (available: {listed})"
        key: Any = name  # (typed a string; a subscript makes it any value)
        if _bounded_work.get() and isinstance(key, _CONTAINERS) and _walked_chars(key, 1) is None:
            # jinja's message writes the key whole (a probe: a nested list, 300 million characters,
            # 2 GB, in the step's record)
            shown = type(key).__name__
            return f"{type(obj).__name__} object has no element of this key (a {shown} too large to show)"
        message: str = super()._undefined_message
        return message


def _take(counter: contextvars.ContextVar[list[int]], full: int, units: int) -> bool:
    """Takes ``units`` from what ``counter`` has left (``full`` if it was never set); False once
    that is spent (it then stays at 0)."""
    left = counter.get(None)
    if left is None:
        left = [full]
        counter.set(left)
    left[0] -= units
    if left[0] < 0:
        left[0] = 0
        return False
    return True


class _Budget:
    """The work left for the evaluation in progress. Evaluation is synchronous; workflows run on
    several threads of one worker process, so the counter lives in a context variable (each thread
    has its own) and is reset at the start of every top-level call."""

    _remaining: contextvars.ContextVar[list[int]] = contextvars.ContextVar("wfa_template_budget")

    _single_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("wfa_template_single")

    _arguments_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("wfa_template_arguments")

    _uncounted_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("wfa_template_uncounted")

    @classmethod
    def reset(cls) -> None:
        cls._remaining.set([WORK_BUDGET])
        cls._single_left.set([_SINGLE_OPERATION_BUDGET])
        cls._arguments_left.set([_SINGLE_OPERATION_BUDGET])
        cls._uncounted_left.set([_SINGLE_OPERATION_BUDGET])

    @classmethod
    def uncounted(cls, size: int, what: str) -> None:
        """Counts work filters, tests and methods do in single calls that the other counts do not
        see (text made by padding, indenting, batching, replacing, separators; values compared or
        turned into text as arguments); past :data:`_SINGLE_OPERATION_BUDGET` in one render,
        refuses (a separate count; not in :func:`unbounded_work`)."""
        if _bounded_work.get() and not _take(cls._uncounted_left, _SINGLE_OPERATION_BUDGET, max(size, 0)):
            raise _Overworked(
                f"the template's filters, tests and methods need more than {_SINGLE_OPERATION_BUDGET:,}"
                f" steps of work done in single calls ({what}, among others): pad, indent or compare"
                " less, or fewer items"
            )

    @classmethod
    def steps_spent(cls) -> int:
        """The steps the last evaluation spent in single operations, reading arguments and in
        uncounted work together (the three counts besides the work budget)."""
        spent = 0
        for counter in (cls._single_left, cls._arguments_left, cls._uncounted_left):
            left = counter.get(None)
            spent += 0 if left is None else _SINGLE_OPERATION_BUDGET - left[0]
        return spent

    @classmethod
    def arguments(cls, size: int) -> None:
        """Counts what filters and tests read of their arguments beyond the value they apply to
        (``select('in', a_list)`` scans the list for every item); past
        :data:`_SINGLE_OPERATION_BUDGET` in one render, refuses (a separate count, as for
        :meth:`single_operations`)."""
        if _bounded_arguments.get() and not _take(cls._arguments_left, _SINGLE_OPERATION_BUDGET, size):
            raise _OverArgued(
                f"the template's filters and tests need more than {_SINGLE_OPERATION_BUDGET:,} steps to"
                " read their arguments (a test such as 'in' given a long list, for every item): filter"
                " by a smaller list, or look items up in a mapping"
            )

    @classmethod
    def single_operations(cls, size: int) -> None:
        """Counts work done in single operations (:data:`_SINGLE_OPERATION_BUDGET`: what
        :func:`_text_size` walked, :func:`_arith`, ``| sum``); past the budget in one render,
        refuses (a separate count: the work budget, which hosts add up, stays as it was)."""
        if not _take(cls._single_left, _SINGLE_OPERATION_BUDGET, size):
            raise _Oversized(
                f"the template needs more than {_SINGLE_OPERATION_BUDGET:,} steps of work done in single"
                " operations (values turned into text or compared, lists summed, arithmetic on"
                " very large numbers)"
            )

    @classmethod
    def spent(cls) -> int:
        """The work spent since the last reset (by the evaluation that just ended)."""
        left = cls._remaining.get(None)
        return 0 if left is None else WORK_BUDGET - left[0]

    @classmethod
    def charge(cls, units: int) -> None:
        if not _take(cls._remaining, WORK_BUDGET, units):
            raise SecurityError(f"the template needs more work than its budget of {WORK_BUDGET} operations")


_CHARS_PER_OPERATION = 16
"""Scanning or copying characters is cheap: this many cost one operation."""


def last_work() -> int:
    """Operations the most recent :func:`render` or :func:`evaluate` in this context spent (also when
    it failed), so a host can bound the total of many evaluations (see the engine's task budget)."""
    return _Budget.spent()


def last_evaluation_work() -> int:
    """:func:`last_work` and :func:`last_uncounted_work` together: what the most recent evaluation
    spent, the same in every process (compiling counts in no evaluation, see :func:`_compiling`)."""
    return last_work() + last_uncounted_work()


_STEPS_PER_OPERATION = 64
"""What the step counts weigh against operations: on this project's 2-core machines an operation
costs about 3 microseconds (the work budget in about 0.3 s), a step about 50 nanoseconds (a probe's
four million steps of comparisons and argument reads in 0.1 to 0.25 s)."""


def last_uncounted_work() -> int:
    """What the most recent :func:`render` or :func:`evaluate` spent besides :func:`last_work`, in
    operations: its steps in single operations, reading arguments and in uncounted work,
    :data:`_STEPS_PER_OPERATION` to an operation. A host that bounds many evaluations together
    counts it too (an attacker's probe: 480 evaluations, each spending little of the work budget
    and most of the others, held one workflow task 46 s)."""
    return _Budget.steps_spent() // _STEPS_PER_OPERATION


def _cost(value: Any) -> int:
    """What reading ``value`` costs: one operation, plus its length (strings: per 16 characters)."""
    if isinstance(value, str):
        return 1 + len(value) // _CHARS_PER_OPERATION
    if isinstance(value, (list, tuple, dict, range)):
        return 1 + len(value)
    return 1


def _read(value: Any) -> Any:
    """Charges for reading an operand of a comparison, and returns it (a comparison walks nested
    values in one C call: their size is checked as text's is, :func:`_text_size`)."""
    _Budget.charge(_cost(value))
    _text_size(value, "compared")
    return value


def _arith_operand(value: Any) -> Any:
    """An operand of ``-``, ``/`` or ``//``, its size counted (:func:`_arith`)."""
    _arith(value)
    return value


def _hashed_key(value: Any) -> Any:
    """A dict literal's key, counted as hashed whole (:func:`_compared`)."""
    _compared(value)
    return value


def _read_text(value: Any) -> Any:
    """:func:`_read` for an operand of ``~``, which becomes text (:func:`_text_size`)."""
    _Budget.charge(_cost(value))
    _text_size(value)
    _digits_work(value)
    return value


def _counted(iterable: Any) -> Iterator[Any]:
    """Iterates ``iterable``, charging one operation per item."""
    for item in iterable:
        _Budget.charge(1)
        yield item


_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "filesizeformat", "forceescape", "format", "indent",
        "join", "lower", "pprint", "replace", "safe", "string", "striptags", "title", "trim",
        "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
    }
)  # fmt: skip
"""Filters that turn their input (a container: every item) into text."""

_COMPARING = frozenset(
    {
        "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan",
        ">", "ge", ">=", "in", "sort", "dictsort", "max", "min", "unique", "groupby", "test", "filter",
    }
)  # fmt: skip
"""Tests that compare their value with their arguments, and filters that compare their input's
items with each other: in one C call each, as deep as the values go (:func:`_uncounted`)."""


_MAX_ROUND_DIGITS = 100_000
"""The largest precision ``round`` takes (a number has at most 30,000 digits a template may return)."""

_SLOW_TEXT = 16
"""``pprint`` walks a value in Python, about this many times slower than the C walks the other
steps stand for: its steps count this many times (a probe: three calls on 600,000 items, 2.8 s)."""


def _compared_items(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, each counted as compared (:func:`_compared`) as it is read: a filter that
    compares an earlier filter's output (``select | sort``) gets an iterator, not a list."""
    for item in items:
        _compared(item)
        yield item


def _charging(
    function: Callable[..., Any],
    makes_text: bool = False,
    compares: bool = False,
    name: str = "",
    *,
    is_filter: bool = False,
) -> Callable[..., Any]:
    """A filter or test that charges for what it reads (iterators are charged as consumed); one
    that ``makes_text`` of its input also has its size checked (:func:`_text_size`), and one that
    ``compares`` its input and arguments has theirs counted (:func:`_uncounted`); the large numbers
    it reads or writes as text are counted too (``name``: the filter's or test's)."""
    pass_arg = getattr(function, "jinja_pass_arg", None)
    offset = 1 if pass_arg is not None else 0

    @functools.wraps(function)
    def charged(*args: Any, **kwargs: Any) -> Any:
        if len(args) > offset:
            value = args[offset]
            if isinstance(value, Iterator):
                counted = _counted(value)
                if compares and is_filter and _bounded_work.get():  # (`select | sort`: a review)
                    counted = _compared_items(counted)
                args = (*args[:offset], counted, *args[offset + 1 :])
            _Budget.charge(_cost(value))
            if makes_text:
                _text_size(value)
            if compares:  # (what reading them cost was counted: the items of a flat list)
                for compared in (value, *args[offset + 1 :], *kwargs.values()):
                    _compared(compared, counted=_cost(compared))
            if makes_text:
                _digits_work(value)
                if name == "pprint" and isinstance(value, _CONTAINERS) and _bounded_work.get():
                    _Budget.uncounted((_walked_chars(value) or MAX_RESULT_CHARS) * _SLOW_TEXT, "pprint")
            _big_int_work(value, *args[offset + 1 :], *kwargs.values())
        else:
            _Budget.charge(1)
        # Its other arguments too: the 'in' test reads its list at every call.
        read = sum(_cost(argument) for argument in (*args[offset + 1 :], *kwargs.values()))
        if read > len(args) - offset - 1 + len(kwargs):
            _Budget.arguments(read)
        return function(*args, **kwargs)

    return charged


def _too_large(what: str, size: int, limit: int) -> SecurityError:
    return SecurityError(f"{what} would have {size} items, more than the limit of {limit}")


def _bounded_range(*args: int) -> range:
    """``range`` limited to ``_MAX_RANGE`` items."""
    result = range(*args)
    try:
        size = len(result)
    except OverflowError:
        size = _MAX_RANGE + 1
    if size > _MAX_RANGE:
        raise SecurityError(f"range has more than the limit of {_MAX_RANGE} items")
    return result


def _check_width(value: Any, what: str, *, makes: bool = False) -> None:
    """Refuses a width past :data:`_MAX_ITEMS`; one that ``makes`` that many characters or items
    (padding, a batch's fill) has them counted as uncounted work: one call is bounded, but a
    ``map`` applies it to every item (an attacker's probe: ``map('center', 100000)`` made 1 GB)."""
    if isinstance(value, int) and value > _MAX_ITEMS:
        raise SecurityError(f"{what} {value} is larger than the limit of {_MAX_ITEMS}")
    if makes and isinstance(value, int):
        _Budget.uncounted(value, what)


def _check_percent_format(fmt: str) -> int:
    """Refuses ``*`` widths and widths over the limits; returns the number of fields."""
    total = len(fmt)
    fields = 0
    for match in _PERCENT_SPEC.finditer(fmt.replace("%%", "")):
        fields += 1
        for number in match.groups():
            if number == "*":
                raise SecurityError("'*' widths are not supported in format strings")
            if number is not None:
                _check_width(int(number), "format width")
                total += int(number)
    _made_text(total, "the format string's widths together")
    return fields


def _check_brace_format(fmt: str) -> int:
    unescaped = fmt.replace("{{", "").replace("}}", "")
    if re.search(r"\{[^{}]*\{", unescaped):
        raise SecurityError("nested replacement fields are not supported in format strings")
    total = len(fmt)
    fields = 0
    for match in _BRACE_FIELD.finditer(unescaped):
        fields += 1
        spec = match.group(1).partition(":")[2]
        for number in _DIGITS.findall(spec):
            _check_width(int(number), "format width")
            total += int(number)
    _made_text(total, "the format string's widths together")
    return fields


def _check_replace(s: Any, old: Any, new: Any, count: int | None) -> None:
    """Refuses a replacement whose result would pass :data:`_MAX_ITEMS` characters (or its input's
    length), its arguments counted before they are turned into text (:func:`_uncounted`) and the
    text it makes counted as uncounted work."""
    _uncounted(old, "turned into text")
    _uncounted(new, "turned into text")
    s, old, new = str(s), str(old), str(new)
    occurrences = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    size = len(s) + occurrences * (len(new) - len(old))
    if size > max(_MAX_ITEMS, len(s)):
        raise _too_large("replace result", size, _MAX_ITEMS)
    _Budget.uncounted(size, "replace")


def _sized(value: Any) -> bool:
    return isinstance(value, (str, list, tuple))


def _to_json(value: Any, *, check: bool = False) -> Any:
    """Convert an evaluation result into plain JSON-compatible Python values.

    Raises:
        jinja2.exceptions.UndefinedError: If the value is or contains an undefined value.
        TypeError: If the value is or contains something without a JSON representation.
        SecurityError: If the result is larger than :data:`MAX_RESULT_CHARS` (on its structure).
    """
    size = [0]
    return _json_value(value, size, check and _checked_values.get())


def _grow(size: list[int], by: int) -> None:
    size[0] += by
    if size[0] > MAX_RESULT_CHARS:
        raise SecurityError(f"the result is larger than {MAX_RESULT_CHARS} characters")


def _json_value(value: Any, size: list[int], check: bool = False) -> Any:
    """``value`` as plain JSON values; with ``check``, refusing what no JSON reader takes back
    (:class:`UnreadableValueError`): only for what an evaluation returns, never inside it (a
    ``tojson`` or printed value is a string; jinja may also call the printing at compile time,
    cached across runs, where a check would make the outcome depend on the cache)."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        _grow(size, 2 + len(value))
        if check:
            _check_text(value)
        return value if type(value) is str else str(value)
    _grow(size, 1)
    if value is None or type(value) is bool:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if check and value.bit_length() > MAX_RESULT_INT_BITS:
            raise _Unreadable(
                f"a number of {value.bit_length():,} bits (over {MAX_RESULT_INT_BITS:,}, about 3,900"
                " digits): JSON readers refuse numbers past 4,300 digits"
            )
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{value} is not a valid JSON number")
        return float(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__} {key!r}")
            _grow(size, len(key))
            if check:
                _check_text(key)
            result[str(key)] = _json_value(item, size, check)
        return result
    if isinstance(value, (list, tuple, range, Iterator, KeysView, ValuesView, ItemsView)):
        items: list[Any] = []
        for item in value:
            if len(items) >= _MAX_ITEMS:
                raise _too_large("result", len(items) + 1, _MAX_ITEMS)
            items.append(_json_value(item, size, check))
        return items
    raise TypeError(f"a {type(value).__name__} value cannot be converted to JSON")


def _finalize(value: Any) -> Any:
    """Print containers as JSON inside string templates, and refuse non-JSON objects; every output
    is charged to the budget (a loop printing a large value many times would exhaust memory)."""
    _Budget.charge(_cost(value))
    _digits_work(value)
    if isinstance(value, Undefined) or value is None or isinstance(value, (str, int, float)):
        return value
    _uncounted(value, "turned into text")  # (a probe: printing 600,000 items 30 times, 5.5 s)
    return json.dumps(_to_json(value), sort_keys=True, ensure_ascii=False, allow_nan=False)


def _tojson(value: Any, indent: int | str | None = None) -> str:
    """Deterministic JSON: keys sorted, no HTML escaping, non-ASCII kept; the indentation it adds
    counted before it is written (:func:`_indented_size`)."""
    _uncounted(value, "turned into text")  # (a probe: 600,000 items 30 times, 5.4 s)
    _digits_work(value)
    plain = _to_json(value)
    if indent is not None and _bounded_arguments.get():
        _made_text(_indented_size(plain, indent), "tojson's indent")
    return json.dumps(plain, sort_keys=True, ensure_ascii=False, allow_nan=False, indent=indent)


def _indented_size(plain: Any, indent: Any) -> int:
    """The characters ``json.dumps(plain, indent=indent)`` adds for its indentation: a newline and
    the indent once per level for every item of a list or an object (and its closing bracket).
    The walk visits what :func:`_to_json` already bounded, counted as single operations."""
    _uncounted(indent, "turned into text")
    width = indent if isinstance(indent, int) and not isinstance(indent, bool) else len(str(indent))
    width = max(width, 0)
    size = visited = 0
    stack: list[tuple[Any, int]] = [(plain, 0)]
    while stack:
        item, depth = stack.pop()
        visited += 1
        if isinstance(item, (dict, list)) and item:
            size += (len(item) + 1) * (1 + width * depth) + len(item) * width
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        if size > MAX_RESULT_CHARS:
            break
    _Budget.arguments(visited)
    return size


def _check_translate(text: str, table: Mapping[Any, Any]) -> None:
    """Refuses ``text.translate(table)`` whose replacements would make more than
    :data:`MAX_RESULT_CHARS` characters, counted from the characters ``text`` holds (each entry's
    count is a scan of ``text``, charged as arguments read)."""
    growing = [
        (key, len(value))
        for key, value in table.items()
        if isinstance(key, int) and 0 <= key < 0x110000 and isinstance(value, str) and len(value) > 1
    ]
    if not growing or not _bounded_arguments.get():
        return
    _Budget.arguments(len(growing) * _cost(text))
    extra = sum(text.count(chr(key)) * (length - 1) for key, length in growing)
    _made_text(extra, "translate's table")


def _duration_seconds(value: Any) -> float:
    """Parse a duration such as ``"1h30m"`` or ``"PT30S"`` into seconds."""
    return parse_duration(value).total_seconds()


@pass_environment
def _sum(
    environment: jinja2.Environment, iterable: Any, attribute: str | int | None = None, start: Any = 0
) -> Any:
    """jinja's ``sum``, with the cost of adding up sequences counted: ``start=[]`` concatenates,
    copying the total so far at every item (a review: ``[b]*800 | sum(start=[])`` took 24 s in one
    C call). The total is bounded as repetition is."""
    if attribute is not None:
        iterable = map(jinja2.filters.make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    if _bounded_sizes.get() and not isinstance(start, (int, float)):
        length = len(start) if isinstance(start, (str, list, tuple)) else 1
        copies = 0
        for item in items:
            length += len(item) if isinstance(item, (str, list, tuple)) else 1
            copies += length
            if length > _MAX_ITEMS:
                raise _Oversized(f"sum would have more than the limit of {_MAX_ITEMS} items")
        _Budget.single_operations(copies)
    return sum(items, start)


def _guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Bound the built-in filters that can amplify output size beyond their input."""
    center = filters["center"]
    indent = filters["indent"]
    join = filters["join"]
    wordwrap = filters["wordwrap"]
    fmt = filters["format"]
    batch = filters["batch"]
    # The registered "slice" is jinja's async-aware variant, which expects the context that jinja
    # passes only to filters marked for it: calling it from a plain wrapper failed for every use.
    slice_ = jinja2.filters.sync_do_slice
    replace = filters["replace"]
    attr = filters["attr"]
    round_ = filters["round"]

    def do_center(value: str, width: int = 80) -> str:
        _check_width(width, "center width", makes=True)
        result: str = center(value, width)
        return result

    def do_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        _check_width(width, "indent width")
        if isinstance(width, int) and _bounded_work.get():  # the spaces on every line (a probe:
            # 100,000 on 10,000 lines); not read in a run recorded before (a review: str() of a
            # value the indent then refuses, built for nothing)
            _Budget.uncounted((str(s).count("\n") + 1) * max(width, 0), "indent")
        if isinstance(width, str):  # the text itself, on every line
            _made_text((str(s).count("\n") + 1) * len(width), "indent")
        result: str = indent(s, width, first, blank)
        return result

    @pass_eval_context
    def do_join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: str | int | None = None) -> str:
        items = value if isinstance(value, (list, tuple, str)) else list(value)
        _uncounted(d, "turned into text")
        _made_text(len(str(d)) * max(len(items) - 1, 0), "join's separator between the items")
        result: str = join(eval_ctx, items, d, attribute)
        return result

    @pass_environment
    def do_wordwrap(environment: jinja2.Environment, s: str, *args: Any, **kwargs: Any) -> str:
        # (width, break_long_words, wrapstring, break_on_hyphens), as jinja's wordwrap takes them
        width = args[0] if args else kwargs.get("width", 79)
        wrapstring = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        _uncounted(wrapstring, "turned into text")
        if wrapstring is not None and isinstance(width, int):
            text = str(s)
            lines = len(text) // max(width, 1) + text.count("\n") + 1
            _made_text(lines * len(str(wrapstring)), "wordwrap's wrap string")
        result: str = wordwrap(environment, s, *args, **kwargs)
        return result

    def do_format(value: str, *args: Any, **kwargs: Any) -> str:
        for argument in (*args, *kwargs.values()):
            _uncounted(argument, "turned into text")
            _digits_work(argument)
        _formatted_work(_check_percent_format(str(value)), (*args, *kwargs.values()))
        result: str = fmt(value, *args, **kwargs)
        return result

    def do_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        _check_width(linecount, "batch size", makes=fill_with is not None)
        return batch(value, linecount, fill_with)

    def do_slice(value: Any, slices: int, fill_with: Any = None) -> Any:
        _check_width(slices, "slice count", makes=True)  # (a list for every slice, filled or not)
        return slice_(value, slices, fill_with)

    @pass_eval_context
    def do_replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
        _check_replace(s, old, new, count)
        result: str = replace(eval_ctx, s, old, new, count)
        return result

    def do_round(*args: Any, **kwargs: Any) -> Any:
        # A negative precision is a power of ten to divide by: `1 | round(-10000000)` computed
        # 10**10,000,000 (a probe: 6 s in one call). Called as jinja's own is, whatever it is
        # given: a wrong call says what it said (a review: the wrapper's name in its messages).
        precision = args[1] if len(args) > 1 else kwargs.get("precision", 0)
        if isinstance(precision, int) and abs(precision) > _MAX_ROUND_DIGITS and _bounded_work.get():
            raise _Overworked(f"round's precision {precision} is beyond {_MAX_ROUND_DIGITS:,} digits")
        return round_(*args, **kwargs)

    @pass_environment
    def do_attr(environment: jinja2.Environment, obj: Any, name: str) -> Any:
        # Definition data are JSON objects: ``x | attr('key')`` reads a key, as ``x.key`` does.
        _compared(name)  # (hashed: a probe's nested tuple, 0.9 s a call)
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        return attr(environment, obj, name)

    filters.update(
        attr=do_attr,
        center=do_center,
        indent=do_indent,
        join=do_join,
        wordwrap=do_wordwrap,
        format=do_format,
        batch=do_batch,
        slice=do_slice,
        replace=do_replace,
        round=do_round,
    )


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_LOOP_GUARD = "__wfa_loop__"
_READ_GUARD = "__wfa_read__"
_TEXT_GUARD = "__wfa_text__"
_ARITH_GUARD = "__wfa_arith__"
_KEY_GUARD = f"__wfa_key_{token_hex(8)}__"
"""Named per process: no template can name it (a review: a name templates could write, which the
build before answered "undefined"). It never reaches a rendered value."""
_NEVER_CONSTANT = (nodes.Name, nodes.Call, nodes.Add, nodes.Mul, nodes.Pow, nodes.Mod)
"""Nodes jinja never computes as it compiles (names; calls; the operators the sandbox intercepts):
an expression holding one is evaluated as it runs, whatever guard wraps it."""


def _guarded(name: str, node: nodes.Expr) -> nodes.Expr:
    return nodes.Call(nodes.Name(name, "load"), [node], [], None, None)


def _guard_tree(tree: nodes.Node) -> None:
    """Routes the work the sandbox does not intercept through the budget: each ``{% for %}``
    iteration, and the operands of comparisons (``in`` scans a whole string) and of ``~``."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _guarded(_LOOP_GUARD, cast(nodes.Expr, loop.iter))
    for compare in tree.find_all(nodes.Compare):
        compare.expr = _guarded(_READ_GUARD, compare.expr)
        for operand in compare.ops:
            operand.expr = _guarded(_READ_GUARD, operand.expr)
    for concat in tree.find_all(nodes.Concat):
        concat.nodes = [_guarded(_TEXT_GUARD, node) for node in concat.nodes]
    # The sandbox does not intercept these (it does *, **, + and %): their operands' sizes are
    # counted here. Constant operands are left as they are (jinja computes them when it compiles).
    for binop in tree.find_all((nodes.Sub, nodes.Div, nodes.FloorDiv)):
        if not (isinstance(binop.left, nodes.Const) and isinstance(binop.right, nodes.Const)):
            binop.left = _guarded(_ARITH_GUARD, binop.left)
            binop.right = _guarded(_ARITH_GUARD, binop.right)
    # A dict literal's keys are hashed whole: a tuple's hash is computed again each time, as deep as
    # it goes (a review: `{t: 1}` of a nested tuple, 24 s). Only a key jinja would not compute as it
    # compiles is guarded, so what it computes then stays as it was.
    for pair in tree.find_all(nodes.Pair):
        key = pair.key
        if isinstance(key, _NEVER_CONSTANT) or any(key.find_all(_NEVER_CONSTANT)):
            pair.key = _guarded(_KEY_GUARD, key)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox every definition template and expression runs in."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=_Undefined, autoescape=False, finalize=_finalize)
        self.globals["range"] = _bounded_range
        # lipsum draws from the random module.
        del self.globals["lipsum"]
        del self.filters["random"]
        _guard_filters(self.filters)
        self.filters["sum"] = _sum
        self.filters["tojson"] = _tojson
        self.filters["duration_seconds"] = _duration_seconds
        for name, function in list(self.filters.items()):
            self.filters[name] = _charging(
                function,
                makes_text=name in _TEXT_FILTERS,
                compares=name in _COMPARING,
                name=name,
                is_filter=True,
            )
        for name, test in list(self.tests.items()):
            self.tests[name] = _charging(
                cast(Callable[..., Any], test), compares=name in _COMPARING, name=name
            )
        self.globals[_LOOP_GUARD] = _counted
        self.globals[_READ_GUARD] = _read
        self.globals[_TEXT_GUARD] = _read_text
        self.globals[_ARITH_GUARD] = _arith_operand
        self.globals[_KEY_GUARD] = _hashed_key

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        """Templates and expressions alike are compiled with their work routed through the budget."""
        _guard_tree(source)
        generated: str = super()._generate(source, name, filename, defer_init=defer_init)
        return generated

    def getitem(self, obj: Any, argument: Any) -> Any:
        """A subscript's key is hashed whole (a probe: ``{}[t]`` of a nested tuple, 0.2 s each)."""
        _compared(argument)
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Prefer keys over methods for dicts, so ``input.items`` means the ``items`` key."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge before computing them."""
        _Budget.charge(1)
        _arith(left, right)
        if operator == "**":
            if isinstance(right, (int, float)) and right > _MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is larger than the limit of {_MAX_EXPONENT}")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and left.bit_length() * right > _MAX_POWER_BITS
            ):
                raise SecurityError("power result is too large")
        elif operator == "*":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > _MAX_POWER_BITS
                and _bounded_sizes.get()
            ):
                # Before, each product was one operation, however large: squaring in a loop
                # doubled the number each time (found by an attacker's probe).
                raise _Oversized(f"product result is too large (over {_MAX_POWER_BITS:,} bits)")
            for sequence, count in ((left, right), (right, left)):
                if _sized(sequence) and isinstance(count, int):
                    size = len(sequence) * count
                    if size > _MAX_ITEMS:
                        raise _too_large("repetition", size, _MAX_ITEMS)
                    _Budget.charge(max(size, 0))
        elif operator == "+":
            if _sized(left) and _sized(right):
                size = len(left) + len(right)
                if size > _MAX_ITEMS:
                    raise _too_large("concatenation", size, _MAX_ITEMS)
                _Budget.charge(size)
        elif operator == "%" and isinstance(left, str):
            fields = _check_percent_format(left)
            _text_size(right)
            _digits_work(right)
            _formatted_work(
                fields,
                right.values()
                if isinstance(right, Mapping)
                else right
                if isinstance(right, tuple)
                else (right,),
            )
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Bound string methods that pad or replace before calling them; charge every call."""
        if __obj is _hashed_key:  # a guard added after the others: it charges nothing they count
            return __obj(*args)
        _Budget.charge(1 + sum(_cost(argument) for argument in (*args, *kwargs.values())))
        if (
            isinstance(__obj, types.BuiltinMethodType)
            and __obj.__name__ in ("encode", "to_bytes")
            and isinstance(__obj.__self__, (str, int))
            and _bounded_sizes.get()
        ):
            raise _bytes_refused(__obj.__name__)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, (str, list, dict)):
            _Budget.charge(_cost(__obj.__self__))
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, str):
            name = __obj.__name__
            if name in _WIDTH_METHODS:
                for argument in (*args, *kwargs.values()):
                    _check_width(argument, f"{name} width", makes=True)
            elif name == "expandtabs":
                tabsize = args[0] if args else kwargs.get("tabsize", 8)
                if isinstance(tabsize, int):
                    size = len(__obj.__self__) * max(tabsize, 1)
                    if size > max(_MAX_ITEMS, len(__obj.__self__)):
                        raise _too_large("expandtabs result", size, _MAX_ITEMS)
                    _Budget.uncounted(size, "expandtabs")
            elif name in ("join", "format", "format_map"):
                for argument in (*args, *kwargs.values()):
                    _text_size(argument)
                    _digits_work(argument)
                if name == "join" and len(args) == 1 and _bounded_arguments.get():
                    items = args[0]
                    if not isinstance(items, (list, tuple, str, dict)):  # (the call charged the rest)
                        items = list(items)
                        _Budget.arguments(len(items))
                    args = (items,)
                    separators = len(__obj.__self__) * max(len(items) - 1, 0)
                    _made_text(separators, "join's separator between the items")
            elif name == "translate" and args and isinstance(args[0], Mapping):
                _check_translate(__obj.__self__, args[0])
            elif name == "replace" and len(args) >= 2:
                count = args[2] if len(args) > 2 else kwargs.get("count")
                _check_replace(__obj.__self__, args[0], args[1], count)
        if __obj is dict or __obj is jinja2.utils.Namespace:  # keys hashed (a probe: 8.8 s)
            for argument in args:
                if isinstance(argument, Mapping):
                    keys: list[Any] = list(argument)
                elif isinstance(argument, (list, tuple)):
                    keys = [pair[0] for pair in argument if isinstance(pair, (list, tuple)) and pair]
                else:
                    keys = []
                for key in keys:
                    _compared(key)
        if (
            isinstance(__obj, types.BuiltinMethodType)
            and isinstance(__obj.__self__, (list, tuple, dict))
            and __obj.__name__ in ("count", "index", "get", "setdefault", "pop", "fromkeys")
        ) or (isinstance(__obj, types.MethodType) and isinstance(__obj.__self__, LoopContext)):
            # compared with every item, or hashed whole (a tuple's hash is not kept: a review
            # found `{}.get(t)` and `loop.changed(v)` of nested values taking 4 to 24 s)
            for argument in (*args, *kwargs.values()):
                _compared(argument, counted=_cost(argument))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Check format specs of ``str.format``/``format_map`` before the sandboxed call."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        sandboxed = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            fields = _check_brace_format(fmt)
            values = [*args, *kwargs.values()]
            if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):  # format_map
                values = list(args[0].values())
            _digits_work(values)
            _formatted_work(fields, values)
            return sandboxed(*args, **kwargs)

        return checked


_ENV = _Environment()

_HTML_ENV = _Environment()
# Set before anything is compiled in it: every ``{{ ... }}`` output is HTML-escaped.
_HTML_ENV.autoescape = True


_TOO_DEEP = (
    "nests or recurses too deeply (brackets, a long chain of operators, filters or attributes,"
    " blocks inside blocks, or a macro or loop calling itself); split it into smaller templates,"
    " variables or steps"
)


def _detail(exc: Exception) -> str:
    if isinstance(exc, RecursionError) or (isinstance(exc, SyntaxError) and "too many" in str(exc.msg)):
        # Python's words for these ("maximum recursion depth exceeded", "too many nested
        # parentheses" at a line of the code jinja generated) name nothing in the template.
        # (A SyntaxError is Python's own, compiling that code: jinja's is a TemplateError.)
        return _TOO_DEEP
    if isinstance(exc, jinja2.exceptions.TemplateSyntaxError):
        return f"syntax error: {exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.exceptions.TemplateError):
        return str(exc.message) if exc.message else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


FOLD_WORK_PER_TOKEN = 10
"""Operations jinja may spend computing a template's constant parts as it compiles it, per token of
its text (at most :data:`WORK_BUDGET`; :data:`_STEPS_PER_OPERATION` times as many steps of each
other count): a definition's templates together spend at most ten times
:data:`MAX_DEFINITION_TEMPLATE_TOKENS` (one work budget), however many there are."""


@contextlib.contextmanager
def _compiling(source: str, expression: bool) -> Iterator[None]:
    """Jinja computes a template's constant parts as it compiles it, calling filters, once per
    text for every run (then cached). It does so with every check on and budgets of its own, which
    depend on the text alone (:data:`FOLD_WORK_PER_TOKEN`): a constant they refuse or that needs
    more is left to the evaluation, which computes and counts it. So the compiled template depends
    on its text alone, and no evaluation counts the compile: what an evaluation counts is the same
    in every worker process, whether it had compiled the text before or not.

    Before, compiling spent the evaluation's budgets themselves: a constant was left uncomputed
    after an evaluation that spent its budget (and counted at every later evaluation in that
    process), a dict's second string compiled on what the first had left, a relaxed caller
    computed constants a checked one refuses, and the evaluation that compiled counted the compile
    (found by three reviews: a run's work budget, ``interpreter.engine``'s ``RUN_WORK_BUDGET``, was
    crossed at another step on a worker started fresh, and the replay failed as nondeterministic).
    Whole budgets for each compile made checking a definition take 57 s, and a render of many
    strings 30 s (reviews): a definition's templates together now fold at most one work budget."""
    work = min(WORK_BUDGET, FOLD_WORK_PER_TOKEN * max(_tokens(source, expression), 0))
    steps = work * _STEPS_PER_OPERATION
    with (
        _scoped(_bounded_work, True),
        _scoped(_bounded_sizes, True),
        _scoped(_bounded_arguments, True),
        _scoped(_Budget._remaining, [work]),
        _scoped(_Budget._single_left, [steps]),
        _scoped(_Budget._arguments_left, [steps]),
        _scoped(_Budget._uncounted_left, [steps]),
    ):
        yield


_COMPILERS = 16
"""Threads compiles run on, started as they are needed: a small compile does not wait behind
another caller's large one (with one thread, a one-token compile waited 500 ms behind three
10,000-token ones, found by a review)."""


def _new_compiler() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_COMPILERS, thread_name_prefix="wfa-template-compile")


_COMPILER = _new_compiler()
_on_compiler = threading.local()


def _forked() -> None:
    """A process forked from one whose compilers had started has none (the threads are the
    parent's): the child gets its own."""
    global _COMPILER
    _COMPILER = _new_compiler()


os.register_at_fork(after_in_child=_forked)


def _at_fixed_depth(compile_: Callable[[], _R]) -> _R:
    """``compile_()`` run on a compiler thread (with the caller's context), which the caller waits
    for: its answer, or its exception raised here.

    Jinja parses and generates code by recursion (about 13 frames a level of brackets, one a term
    of ``1+1+...``, a filter of ``x|f|f...``, a nested block), and so does Python compiling what it
    generated. Run in the caller's thread, whether a deeply nested template compiled depended on
    how deep the caller's stack was: 60 levels of brackets compiled at the top of a thread and
    failed 300 frames down. A worker compiles a text once (then caches it) wherever a run first
    meets it, so the same run's template could compile on one worker and fail on another, started
    fresh, replaying it. On threads of their own, compiles start at the same depth, so whether a
    text compiles (and the error it gets) depends on the text alone, for the client that checks a
    definition and the worker that runs it alike. Handing a compile over costs about 20
    microseconds of CPU, and 80 more were measured per compile (of 300 to 400) with the wait.

    Where no compiler thread can take it (none could be started, or the interpreter is shutting
    down: ``submit`` raises RuntimeError), the caller compiles it itself, as before: a handover
    that failed is no template's error (as a TemplateError it failed a run's step for good, and a
    single expression's check cached it as "not an expression", found by a review). A compile
    that compiled again (none does) would do so where it is."""
    if getattr(_on_compiler, "active", False):
        return compile_()
    context = contextvars.copy_context()

    def run() -> _R:
        _on_compiler.active = True
        return context.run(compile_)

    try:
        future = _COMPILER.submit(run)
    except RuntimeError:
        return compile_()
    return future.result()


@_SourceCache
def _compile_expression(source: str) -> TemplateExpression:
    def compile_() -> TemplateExpression:
        with _compiling(source, expression=True):
            return _ENV.compile_expression(source, undefined_to_none=False)

    return _at_fixed_depth(compile_)


def _mark_references(tree: nodes.Node) -> list[str]:
    """Marks the author's references in the template's text (see :data:`_REFERENCE_OPEN`); returns
    what :func:`check_template` refuses: references an expression could take apart, left unmarked
    (so rendered as text)."""
    problems: list[str] = []

    def mark(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) else f"{_REFERENCE_OPEN}{match.group(2)}\ue001"

    def walk(node: nodes.Node, read_back: bool) -> None:
        if isinstance(node, nodes.TemplateData) and _SECRET_START in node.data:
            if read_back:
                problems.append(
                    "a secret reference in the body of a set, filter, macro, call, block or recursive"
                    " loop is a value an expression could take apart; write it in the template's own text"
                )
            else:
                node.data = sub_references(_AUTHOR_REFERENCE, mark, node.data, "\ue000\ue001")
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and _SECRET_START in node.value:
            problems.append(
                "a secret reference inside {{ }} or {% %} is a value an expression could take apart;"
                " write it in the template's text, outside the tags"
            )
        # A recursive loop's body is read back too: ``loop(children)`` returns it as a value.
        inner = read_back or isinstance(node, _READ_BACK) or (isinstance(node, nodes.For) and node.recursive)
        for child in node.iter_child_nodes():
            walk(child, inner)

    walk(tree, False)
    return problems


def _compile_marked(env: jinja2.Environment, source: str) -> tuple[jinja2.Template, tuple[str, ...]]:
    def compile_() -> tuple[jinja2.Template, tuple[str, ...]]:
        tree = env.parse(source)
        problems = _mark_references(tree)
        with _compiling(source, expression=False):
            return env.from_string(tree), tuple(problems)

    return _at_fixed_depth(compile_)


def _inert_output(value: Any) -> Any:
    """A rendered value with every reference that is not a marked author's escaped (what data
    formed), and the marks put back as the author's references."""
    value = seal(value)
    if isinstance(value, str) and _REFERENCE_OPEN in value:
        value = _REFERENCE_MARK.sub(lambda m: f"{_SECRET_START}{m.group(1)}}}", value)
    return value


@_SourceCache
def _compile_template(source: str) -> tuple[jinja2.Template, tuple[str, ...]]:
    return _compile_marked(_ENV, source)


def check_expression(src: str) -> None:
    """Check that a bare expression (no braces) parses.

    Args:
        src: The expression, e.g. ``steps.check.output.status_code == 200``.

    Raises:
        TemplateError: On a syntax error.
    """
    if not _charge_tokens(src, expression=True):
        return
    try:
        _compile_expression(src)
    except Exception as exc:
        raise TemplateError(src, _detail(exc)) from exc


def _templated_secret(src: str) -> bool:
    r"""Whether a secret reference in ``src`` has a template tag (``{{`` or ``{%``) before its
    closing ``}``: what the pattern ``\$\{secret:[^}]*\{[{%]`` finds, in linear time (the pattern
    backtracked from every ``${secret:`` to the next ``}``: 200 KB of them took 7.7 s, found by an
    attacker's probe)."""
    for segment in src.split("}"):
        start = segment.find(_SECRET_START)
        if start != -1 and (
            segment.find("{{", start + len(_SECRET_START)) != -1
            or segment.find("{%", start + len(_SECRET_START)) != -1
        ):
            return True
    return False


def check_template(src: str) -> None:
    """Check that a template string parses.

    Args:
        src: The template, e.g. ``Hello {{ input.name }}``.

    Raises:
        TemplateError: On a syntax error.
    """
    if _DOLLAR_BEFORE_TAG.search(src):
        raise TemplateError(
            src,
            "a '$' directly before '{{' or '{%' could let the rendered value complete a secret"
            " reference; write \"{{ '$' ~ expr }}\" or put a space between",
        )
    if _templated_secret(src):
        raise TemplateError(src, "a secret reference must name its secret literally, not with a template")
    if not any(marker in src for marker in _COMPILED_MARKERS):
        return  # plain text: rendered as it is, nothing to compile (nor to count)
    if not _charge_tokens(src, expression=False):
        return
    try:
        _, problems = _compile_template(src)
    except Exception as exc:
        raise TemplateError(src, _detail(exc)) from exc
    if problems:
        raise TemplateError(src, problems[0])


def _check_size(source: str, text: str) -> str:
    if len(text) * 4 > MAX_RENDERED_BYTES and len(text.encode("utf-8")) > MAX_RENDERED_BYTES:
        raise TemplateError(source, f"rendered string is larger than {MAX_RENDERED_BYTES} bytes")
    return text


def _evaluate_compiled(source: str, expression: TemplateExpression, context: Mapping[str, Any]) -> Any:
    try:
        value = _to_json(expression(dict(context)), check=True)
    except TemplateError:
        raise
    except _Unreadable as exc:
        raise UnreadableValueError(source, str(exc)) from None
    except _Oversized as exc:
        raise OversizedValueError(source, str(exc)) from None
    except _OverArgued as exc:
        raise ArgumentSizeError(source, str(exc)) from None
    except _Overworked as exc:
        raise UncountedWorkError(source, str(exc)) from None
    except Exception as exc:
        raise TemplateError(source, _detail(exc)) from exc
    if isinstance(value, str):
        _check_size(source, value)
    return value


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare jinja expression to a JSON-compatible value.

    Args:
        expression: The expression without braces, e.g.
            ``steps.check.output.status_code == 200 and input.tier in ['gold']``.
        context: Top-level names, e.g. ``{"input": ..., "steps": ...}``.

    Returns:
        The value: ``None``, ``bool``, ``int``, ``float``, ``str``, or lists and dicts of these.
        Iterators (e.g. from ``select``) become lists.

    Raises:
        TemplateError: On a syntax error, an undefined name, a sandbox violation, a result that
            is not JSON-compatible, or any other evaluation error.
    """
    try:
        compiled = _compile_expression(expression)
    except Exception as exc:
        _Budget.reset()  # it spent nothing (before, it reported what the evaluation before it did)
        raise TemplateError(expression, _detail(exc)) from exc
    _Budget.reset()
    return _evaluate_compiled(expression, compiled, context)


def _is_template(text: str) -> bool:
    return any(marker in text for marker in _TEMPLATE_MARKERS)


@_SourceCache
def _single_expression(text: str) -> TemplateExpression | None:
    """The compiled expression if ``text`` is exactly one ``{{ expr }}``, else ``None``."""
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")) or len(stripped) < 4:
        return None
    inner = stripped[2:-2]
    # Whitespace-control markers ("{{- x -}}") only affect the surrounding whitespace.
    if inner[:1] in ("-", "+"):
        inner = inner[1:]
    if inner.endswith("-"):
        inner = inner[:-1]
    # If the inner text holds another "}}" outside string literals, it is not one expression
    # and compiling it fails, so the string is rendered as a whole instead.
    try:
        return _compile_expression(inner)
    except Exception:
        return None


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if not _is_template(text):
        return text
    expression = _single_expression(text)
    if expression is not None:
        return _inert_output(_evaluate_compiled(text, expression, context))
    try:
        rendered = _compile_template(text)[0].render(dict(context))
    except _Oversized as exc:
        raise OversizedValueError(text, str(exc)) from None
    except _OverArgued as exc:
        raise ArgumentSizeError(text, str(exc)) from None
    except _Overworked as exc:
        raise UncountedWorkError(text, str(exc)) from None
    except Exception as exc:
        raise TemplateError(text, _detail(exc)) from exc
    return _check_size(text, _inert_output(_readable_text(text, rendered)))


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside a JSON-like value.

    Args:
        value: A dict, list, string or scalar. Dict keys are kept as they are; values and list
            items are rendered recursively. A string that is exactly one ``{{ expr }}`` (with
            optional surrounding whitespace) becomes the expression's native value; any other
            string containing ``{{`` or ``{%`` renders to a string, with lists and dicts printed
            as JSON. Strings without template syntax and non-string scalars are returned as is.
        context: Top-level names, e.g. ``{"input": ..., "steps": ...}``.

    Returns:
        The rendered, JSON-compatible value (tuples become lists).

    Raises:
        TemplateError: If any template fails, yields a non-JSON value, or renders a string
            larger than :data:`MAX_RENDERED_BYTES`.
    """
    _Budget.reset()
    return _render(value, context)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        return {key: _render(item, context) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(item, context) for item in value]
    return value


@_SourceCache
def _compile_html_template(source: str) -> jinja2.Template:
    return _compile_marked(_HTML_ENV, source)[0]


def render_html(value: Any, context: Mapping[str, Any]) -> Any:
    """Render an HTML template with autoescaping: every value a ``{{ ... }}`` writes is escaped
    (``<`` becomes ``&lt;``), so data cannot add markup; ``| safe`` opts out where the author means it.

    Args:
        value: The template; anything but a string is returned as it is (the action's input model
            then refuses it).
        context: Top-level names, as for :func:`render`.

    Returns:
        The rendered string (always a string, even for a template that is one expression).

    Raises:
        TemplateError: As for :func:`render`.
    """
    _Budget.reset()
    if not isinstance(value, str) or not _is_template(value):
        return value
    try:
        rendered = str(_compile_html_template(value).render(dict(context)))
    except TemplateError:
        raise
    except _Oversized as exc:
        raise OversizedValueError(value, str(exc)) from None
    except _OverArgued as exc:
        raise ArgumentSizeError(value, str(exc)) from None
    except _Overworked as exc:
        raise UncountedWorkError(value, str(exc)) from None
    except Exception as exc:
        raise TemplateError(value, _detail(exc)) from exc
    return _check_size(value, _inert_output(_readable_text(value, rendered)))


def contains_template(value: Any) -> bool:
    """Whether any string inside a JSON-like value contains ``{{`` or ``{%``.

    Args:
        value: A dict, list, string or scalar.

    Returns:
        True if rendering could change the value.
    """
    return next(template_strings(value), None) is not None


def key_path(key: Any) -> str:
    """A dict key as a JSON path step: ``.name``, or ``["a b"]`` when it is not a simple name."""
    if isinstance(key, str) and _SIMPLE_KEY.fullmatch(key):
        return f".{key}"
    return f"[{json.dumps(key if isinstance(key, str) else str(key))}]"


def template_strings(value: Any) -> Iterator[tuple[str, str]]:
    """Every string with template syntax inside a JSON-like value, with its path.

    Args:
        value: A dict, list, string or scalar.

    Yields:
        ``(path, text)`` pairs in document order. ``path`` is relative to ``value``: ``""`` for
        ``value`` itself, ``.headers.Authorization`` for dict keys (``["a b"]`` for keys that
        are not simple names) and ``[2]`` for list items.
    """
    if isinstance(value, str):
        if _is_template(value):
            yield "", value
    elif isinstance(value, dict):
        for key, item in value.items():
            prefix = key_path(key)
            for path, text in template_strings(item):
                yield prefix + path, text
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            for path, text in template_strings(item):
                yield f"[{index}]{path}", text
