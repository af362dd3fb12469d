"""Validation of workflow definitions, with errors that name the JSON path of every problem.

:func:`load_definition` is the one entry point: it parses (pydantic: types, unknown fields,
durations, templates) and then checks what needs the whole tree (duplicate ids, jump targets and
loops, nesting depth, known actions, references to steps). A definition that passes runs; one that
does not is refused before any run starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, assert_never

import pydantic

from interpreter.actions import action_input_errors, action_inputs
from interpreter.actions import known_actions as registered_actions
from interpreter.durations import parse_duration
from interpreter.engine import resolve_timeouts
from interpreter.model import (
    STEP_TYPES,
    ApprovalStep,
    ConditionStep,
    Definition,
    DelayStep,
    FailStep,
    ForeachStep,
    HumanTaskStep,
    NestedTemplateError,
    ParallelStep,
    SetStep,
    Step,
    SubflowStep,
    SucceedStep,
    SwitchStep,
    TaskStep,
    WaitForEventStep,
    children,
    jump_targets,
    parse_definition,
)
from interpreter.sizes import json_depth, text_problem
from interpreter.templates import key_path as _key_path
from interpreter.templates import template_strings

# Not preceded by a name or a dot: ``input.steps.x`` is a key of the input, not a step reference.
_STEP_REF = re.compile(r"(?<![\w.])steps\.([A-Za-z_][A-Za-z0-9_]*)")
_VARS_REF = re.compile(r"(?<![\w.])vars\b")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition.

    Attributes:
        path: JSON path, e.g. ``$.steps[2].retry.maximum_attempts``.
        message: What is wrong, in words.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DefinitionError(ValueError):
    """A definition was refused; ``problems`` lists every problem found."""

    def __init__(
        self, problems: Sequence[Problem], name: str | None = None, *, definition: Definition | None = None
    ) -> None:
        self.problems = list(problems)
        self.name = name
        self.definition = definition
        """The definition as parsed, when it parsed and only the whole-tree checks refused it."""
        head = f"invalid workflow definition{f' {name!r}' if name else ''}"
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} ({count} problem{'s' if count != 1 else ''}):\n{lines}")


DEFINITION_MAX_DEPTH = 160
"""Deepest nesting of lists and objects a definition document may have. A run's input carries the
definition, and Temporal's payloads are read with pydantic, which refuses JSON nested past about
200 levels: a deeper definition was registered, then its run could not start (its workflow task
failed for ever; now ``InvalidRunInput``). 20 levels of nested steps (``limits.max_depth`` at its
maximum) take about 80, leaving values (a task's input, a ``set`` step's) room."""

_TOO_DEEP = (
    f"the definition nests lists and objects more than {DEFINITION_MAX_DEPTH} levels deep, more than a"
    " run's input can carry"
)


def load_definition(
    data: Mapping[str, Any] | str | bytes, *, known_actions: Iterable[str] | None = None
) -> Definition:
    """Parses and validates a definition.

    Args:
        data: The definition as a mapping or JSON text.
        known_actions: Action names a task step may call (default: the built-in actions and the
            registered plugins, :func:`interpreter.actions.known_actions`).

    Returns:
        The validated definition.

    Raises:
        DefinitionError: Listing every problem with its JSON path.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise DefinitionError([Problem("$", f"not valid JSON: {err}")]) from None
        except RecursionError:
            raise DefinitionError([Problem("$", _TOO_DEEP)]) from None
    if not isinstance(data, Mapping):
        raise DefinitionError([Problem("$", "a definition is a JSON object")])
    name = data.get("name") if isinstance(data.get("name"), str) else None
    if json_depth(data, DEFINITION_MAX_DEPTH) > DEFINITION_MAX_DEPTH:
        raise DefinitionError([Problem("$", _TOO_DEEP)], name)
    unstorable = unstorable_text_problems(data)  # before the parser, whose words for them mislead
    if unstorable:
        raise DefinitionError(unstorable, name if name is None or text_problem(name) is None else None)
    try:
        definition = parse_definition(data)
    except pydantic.ValidationError as err:
        raise DefinitionError(_from_pydantic(err), name) from None
    except (TypeError, ValueError) as err:
        raise DefinitionError([Problem("$", f"not representable as JSON: {err}")], name) from None
    problems = check_definition(definition, known_actions=known_actions)
    if problems:
        raise DefinitionError(problems, definition.name, definition=definition)
    return definition


def definition_hash(definition: Definition) -> str:
    """The content hash of a definition: sha256 of its canonical JSON (sorted keys, every default
    filled in), without ``version``: the registry numbers versions, and the same content registered
    again, or started from a file, has the same hash. Fields added to the model later
    (``LATER_FIELDS`` of each model) are left out while they hold their default, so a stored body
    keeps its hash when the model grows."""
    body = definition.model_dump(
        mode="json", by_alias=True, exclude={"version"}, context={"content_hash": True}
    )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_path(loc: tuple[int | str, ...]) -> tuple[str, bool]:
    """The JSON path of a pydantic error location, and whether it went through a union member."""
    path = "$"
    union = False
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(previous, int) and part in STEP_TYPES:
            pass  # the discriminated union's tag, not a field of the document
        elif "[" in part or part[:1].isupper() or part.startswith("function-"):
            union = True  # a union member's name, not a field of the document
        else:
            path += f".{part}"
        previous = part
    return path, union


def _loc_path(loc: Sequence[int | str]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else _key_path(part) for part in loc)


def _from_pydantic(err: pydantic.ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    alternatives: dict[str, list[str]] = {}  # one problem per union: "... or ..."
    for e in err.errors(include_url=False):
        path, union = _json_path(tuple(e["loc"]))
        kind = e["type"]
        cause = e.get("ctx", {}).get("error")
        if isinstance(cause, NestedTemplateError):
            path += cause.json_path  # the template's place inside the JSON value
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "union_tag_invalid":
            ctx = e.get("ctx", {})
            message = f"unknown step type {ctx.get('tag')!r} (known: {', '.join(STEP_TYPES)})"
        elif kind == "union_tag_not_found":
            message = f"step has no 'type' (one of: {', '.join(STEP_TYPES)})"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = str(e["msg"]).removeprefix("Value error, ")
        if union:
            if path not in alternatives:
                alternatives[path] = []
                problems.append(Problem(path, ""))
            if message not in alternatives[path]:
                alternatives[path].append(message)
        elif (path, message) not in seen:
            seen.add((path, message))
            problems.append(Problem(path, message))
    return [
        Problem(p.path, _either(alternatives[p.path])) if p.path in alternatives and not p.message else p
        for p in problems
    ]


GOTO_SHAPE = '{"goto": "<step id>"}'


def _either(messages: list[str]) -> str:
    """One message for a value that matched no member of a union (e.g. ``"fail"`` or a goto)."""
    wanted = [m.removeprefix("Input should be ") for m in messages]
    if len(wanted) == len(messages) and all(m.startswith("Input should be ") for m in messages):
        shapes = [
            w.replace("a valid dictionary or instance of Goto", GOTO_SHAPE).replace("an object", GOTO_SHAPE)
            for w in wanted
        ]
        return "should be " + " or ".join(shapes)
    return " or ".join(messages)


@dataclass
class _Placed:
    step: Step
    path: str
    seq_id: int
    index: int


def check_definition(definition: Definition, *, known_actions: Iterable[str] | None = None) -> list[Problem]:
    """Checks the whole-tree rules of an already parsed definition.

    Returns:
        Every problem found (empty when the definition is valid).
    """
    actions = sorted(set(registered_actions() if known_actions is None else known_actions))
    problems: list[Problem] = []
    placed: dict[str, _Placed] = {}
    # For each sequence: its step ids and (parent sequence, index of the containing step) when a
    # jump may leave it for the enclosing sequence.
    seq_ids: list[list[str]] = []
    seq_parent: list[tuple[int, int] | None] = []
    jumps: list[tuple[str, str, int, int]] = []  # (path, target, seq, index)
    writers: list[_Writer] = []  # every step that writes a variable, for the form rule

    def walk(steps: list[Step], path: str, depth: int, parent: tuple[int, int] | None) -> None:
        seq = len(seq_ids)
        seq_ids.append([s.id for s in steps])
        seq_parent.append(parent)
        for i, step in enumerate(steps):
            step_path = f"{path}[{i}]"
            if depth > definition.limits.max_depth:
                problems.append(
                    Problem(
                        step_path,
                        f"nesting depth {depth} exceeds limits.max_depth {definition.limits.max_depth}",
                    )
                )
                continue
            if step.id in placed:
                problems.append(
                    Problem(
                        f"{step_path}.id", f"duplicate step id {step.id!r} (first at {placed[step.id].path})"
                    )
                )
            else:
                placed[step.id] = _Placed(step, step_path, seq, i)
            for suffix, target in jump_targets(step):
                jumps.append((step_path + suffix, target, seq, i))
            _check_step(step, step_path, definition, actions, problems)
            writers.extend(_writers(step, step_path))
            for suffix, nested, boundary in children(step):
                walk(nested, step_path + suffix, depth + 1, None if boundary else (seq, i))

    walk(definition.steps, "$.steps", 1, None)

    for path, target, seq, index in jumps:
        if target not in placed:
            problems.append(Problem(path, f"jump to unknown step {target!r}"))
            continue
        where = placed[target]
        # Climb from the jumping step's sequence to the target's, if jumps may go there.
        cur_seq, cur_index = seq, index
        while cur_seq != where.seq_id:
            parent = seq_parent[cur_seq]
            if parent is None:
                break
            cur_seq, cur_index = parent
        if cur_seq != where.seq_id:
            problems.append(
                Problem(
                    path,
                    f"cannot jump to {target!r} from here: jumps may only target steps in the same"
                    " sequence or an enclosing one, and never leave a parallel branch, a foreach body,"
                    " a compensation or an escalation",
                )
            )
        elif where.index <= cur_index and where.step.max_visits is None:
            problems.append(
                Problem(
                    path,
                    f"jump back to {target!r} makes a loop without a bound: set max_visits on step {target!r}",
                )
            )

    problems.extend(_form_overwrites(writers))
    problems.extend(trigger_problems(definition))

    texts = [(where.path + suffix, text) for where in placed.values() for suffix, text in _texts(where.step)]
    texts.extend((f"$.output{p}", t) for p, t in template_strings(definition.output))
    for i, cancel in enumerate(definition.cancel_on):
        # Rendered when the run starts, before any step: only input and run exist then.
        if _STEP_REF.search(cancel.key) or _VARS_REF.search(cancel.key):
            problems.append(
                Problem(
                    f"$.cancel_on[{i}].key",
                    "a cancel_on key is rendered when the run starts: it may use input and run,"
                    " not steps or vars",
                )
            )
    for path, text in texts:
        for ref in _STEP_REF.findall(text):
            if ref not in placed:
                problems.append(Problem(path, f"refers to unknown step 'steps.{ref}'"))
    return problems


@dataclass(frozen=True)
class _Writer:
    """A place in the definition that writes ``vars.<name>``: a ``set`` step or a form field."""

    name: str
    path: str
    step_path: str
    step_id: str
    form: bool


def _writers(step: Step, path: str) -> list[_Writer]:
    if isinstance(step, SetStep):
        return [_Writer(name, f"{path}.vars.{name}", path, step.id, form=False) for name in step.vars]
    if isinstance(step, ApprovalStep):
        return [
            _Writer(field.name, f"{path}.fields[{i}]", path, step.id, form=True)
            for i, field in enumerate(step.form)
        ]
    return []


def _form_overwrites(writers: list[_Writer]) -> list[Problem]:
    """A form field hands its approvers one variable of their own: no other step may write it.

    Otherwise a decision could replace a value the definition set (a ``set`` step's URL, say) or
    another approval's answer. The same step met again (a loop, a foreach item) is its own writer.
    """
    problems: list[Problem] = []
    by_name: dict[str, list[_Writer]] = {}  # (a scan of every writer per field: 25,000 approvals took 76 s)
    for writer in writers:
        by_name.setdefault(writer.name, []).append(writer)
    for field in (w for w in writers if w.form):
        other = next((w for w in by_name[field.name] if w.step_path != field.step_path), None)
        if other is None:
            continue
        what = (
            f"another approval's form field (step {other.step_id!r})"
            if other.form
            else f"set by step {other.step_id!r}"
        )
        problems.append(
            Problem(
                field.path,
                f"form field {field.name!r} would overwrite vars.{field.name}, {what} at {other.path}:"
                " a form field may only hand a variable that no other step writes; rename one of them",
            )
        )
    return problems


def _inherited_timeout_problems(definition: Definition, step: TaskStep, path: str) -> list[Problem]:
    """A step's own timeout longer than the bound it inherits from ``defaults.timeouts`` (which
    would cap it, as Temporal does): said here, naming both, rather than silently shortened. Its
    own timeouts contradicting each other are refused by the model; an inherited value that is
    longer than the step's own bound is capped without a word (``resolve_timeouts``)."""
    own, base = step.timeouts, definition.defaults.timeouts
    if own is None:
        return []
    found: list[Problem] = []
    pairs = (
        (
            "start_to_close",
            own.start_to_close,
            "schedule_to_close",
            own.schedule_to_close,
            base.schedule_to_close,
        ),
        ("heartbeat", own.heartbeat, "start_to_close", own.start_to_close, base.start_to_close),
    )
    for name, value, bound_name, own_bound, inherited in pairs:
        if value and own_bound is None and inherited and parse_duration(value) > parse_duration(inherited):
            found.append(
                Problem(
                    f"{path}.timeouts.{name}",
                    f"{name} {value} is longer than the {bound_name} this step inherits from"
                    f" defaults.timeouts ({inherited}), which would cut it short: give the step its own"
                    f" {bound_name}",
                )
            )
    return found


def _check_step(
    step: Step, path: str, definition: Definition, actions: list[str], problems: list[Problem]
) -> None:
    if isinstance(step, TaskStep):
        if step.action not in actions:
            problems.append(
                Problem(f"{path}.action", f"unknown action {step.action!r} (known: {', '.join(actions)})")
            )
        elif step.action in action_inputs():
            for loc, message in action_input_errors(step.action, step.input):
                problems.append(Problem(f"{path}.input{_loc_path(loc)}", message))
        problems.extend(_inherited_timeout_problems(definition, step, path))
        timeouts = resolve_timeouts(definition, step)
        if timeouts.start_to_close is None and timeouts.schedule_to_close is None:
            problems.append(
                Problem(
                    f"{path}.timeouts",
                    "no start_to_close or schedule_to_close timeout (set one here or in defaults.timeouts)",
                )
            )
        if step.task_queue is not None and timeouts.schedule_to_close is None:
            problems.append(
                Problem(
                    f"{path}.timeouts",
                    f"the step runs on task queue {step.task_queue!r}: give it a schedule_to_close timeout"
                    " (here or in defaults.timeouts), or it waits for ever when no worker polls that queue",
                )
            )
    elif isinstance(step, ForeachStep):
        limit = definition.limits.max_foreach_items
        if step.max_items is not None and step.max_items > limit:
            problems.append(
                Problem(
                    f"{path}.max_items",
                    f"max_items {step.max_items} exceeds limits.max_foreach_items {limit}",
                )
            )
    elif isinstance(
        step,
        ConditionStep
        | SwitchStep
        | ParallelStep
        | DelayStep
        | ApprovalStep
        | HumanTaskStep
        | SetStep
        | SucceedStep
        | FailStep
        | WaitForEventStep
        | SubflowStep,
    ):
        pass  # their rules are the model's and the tree's
    else:
        assert_never(step)


def new_definition_problems(definition: Definition) -> list[Problem]:
    """The rules for a definition written or registered now, not for one the registry already
    holds (it loads as it did): :func:`legacy_trigger_problems`, :func:`link_problems` and
    :func:`schedule_problems`."""
    problems = legacy_trigger_problems(definition) + link_problems(definition) + schedule_problems(definition)
    if parse_duration(definition.defaults.park_timeout) <= timedelta(0):
        # As a step's own park_timeout is refused (a probe: the default of 0s passed).
        problems.append(Problem("$.defaults.park_timeout", "park_timeout must be greater than zero"))
    return problems


MIN_CATCHUP_WINDOW = timedelta(seconds=10)
"""Temporal's shortest catch-up window: a shorter one is stored as this (and the schedule then
differed from its trigger for ever, OUT OF SYNC: a probe)."""

_CronField = tuple[str, int, int, Mapping[str, int]]
_CRON_FIELDS: tuple[_CronField, ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(
                ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
            )
        },
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}),
)
_CRON_SECOND: _CronField = ("second", 0, 59, {})
_CRON_YEAR: _CronField = ("year", 2000, 2100, {})
"""The fields Temporal's 6-field (year last) and 7-field (second first, year last) forms add, with
the ranges its server holds them to (a year out of 2000-2100 is "not in range": measured)."""


def _cron_field_problem(field: str, name: str, low: int, high: int, names: Mapping[str, int]) -> str | None:
    """What is wrong with one field of a cron expression (``*``, ``?``, values, ranges
    ``a-b`` with a <= b, steps ``/n`` with n >= 1, month and weekday names, ``L``, ``W`` and
    ``#``), or None."""

    def value(text: str) -> int | None:
        number = names.get(text.upper()) if not text.isdigit() else int(text)
        return number if number is not None and low <= number <= high else None

    for item in field.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or not 1 <= int(step) <= high + 1):
            return f"the {name} field's step {step!r} is not a number from 1 to {high + 1}"
        if base in ("*", "?") and (base == "*" or name in ("day of month", "day of week")):
            continue
        if name == "day of month" and re.fullmatch(r"L|LW|[0-9]{1,2}W|L-[0-9]{1,2}", base.upper()):
            continue
        if name == "day of week" and re.fullmatch(
            r"([0-7]|SUN|MON|TUE|WED|THU|FRI|SAT)(#[1-5]|L)", base.upper()
        ):
            continue
        first, dash, last = base.partition("-")
        start, end = value(first), value(last) if dash else None
        if start is None or (dash and (end is None or end < start)):
            return f"{item!r} is not a {name} from {low} to {high}" + (
                " (a range goes up: a-b, a <= b)" if dash else ""
            )
    return None


UNSTORABLE_TEXT_SHOWN = 5
"""The most :func:`unstorable_text_problems` lists one by one (then how many more)."""


def unstorable_text_problems(definition: Definition | Mapping[str, Any]) -> list[Problem]:
    """Strings and keys of the definition (a model, or its JSON document) holding what neither
    the registry nor a payload can hold (:func:`interpreter.sizes.text_problem`: a NUL character
    or a lone surrogate), with their JSON paths. ``wfa validate`` said a definition with a NUL was
    valid, then registering it failed in the database's words; a lone surrogate was "Invalid JSON:
    unexpected end of hex escape" (found by a probe). :func:`load_definition` checks a document;
    a model built in code is checked where it is registered or started."""
    problems: list[Problem] = []
    found = 0
    parts: list[tuple[bool, Any]] = []  # (is a key, the key or index): a path is written only when shown

    def note(problem: str, what: str) -> None:
        nonlocal found
        found += 1
        if found <= UNSTORABLE_TEXT_SHOWN:
            path = "".join(_key_path(part) if is_key else f"[{part}]" for is_key, part in parts)
            problems.append(Problem("$" + path, f"{what} {problem}, which cannot be stored"))

    def walk(value: Any) -> None:
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                note(problem, "has")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                parts.append((True, key))
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    note(problem, "this key has")
                walk(item)
                parts.pop()
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                parts.append((False, index))
                walk(item)
                parts.pop()

    document = definition
    if isinstance(definition, Definition):
        document = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if _may_hold_unstorable_text(document):
        walk(document)
    if found > UNSTORABLE_TEXT_SHOWN:
        problems.append(Problem("$", f"and {found - UNSTORABLE_TEXT_SHOWN} more strings or keys like these"))
    return problems


def _may_hold_unstorable_text(document: Any) -> bool:
    """False when ``document`` surely holds no NUL and no lone surrogate: one pass of the C encoder
    (14 against 36 ms on a 1.2 MB definition). True also for what it cannot encode (the
    walk and the parser name that) and for a string holding the text ``\\u0000``."""
    try:
        written = json.dumps(document, ensure_ascii=False)
        written.encode()
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return True
    return "\\u0000" in written


def link_problems(definition: Definition) -> list[Problem]:
    """Links a definition's steps would mail nobody: ``notify.email.to`` names only people the step
    lists (its approvers or assignee, or those its escalation adds). A link decides for the person
    it names and the run mails nobody else, so a name the step does not list silently got nothing
    (found by a probe). Like :func:`legacy_trigger_problems`, a rule for definitions written or
    registered now, not for those the registry already holds (they load as they did)."""
    problems: list[Problem] = []

    def walk(steps: list[Step], path: str) -> None:
        for i, step in enumerate(steps):
            step_path = f"{path}[{i}]"
            if isinstance(step, ApprovalStep | HumanTaskStep):
                problems.extend(_link_problems(step, step_path))
            for suffix, nested, _ in children(step):
                walk(nested, step_path + suffix)

    walk(definition.steps, "$.steps")
    return problems


def _link_problems(step: ApprovalStep | HumanTaskStep, path: str) -> list[Problem]:
    if step.notify is None:
        return []
    listed = {*step.approvers, *(step.escalation.add_approvers if step.escalation else [])}
    unlisted = [name for name in step.notify.email.to if name not in listed]
    if not unlisted:
        return []
    people = sorted(name for name in listed if not name.startswith("group:"))
    return [
        Problem(
            f"{path}.notify.email.to",
            f"{', '.join(repr(name) for name in unlisted)} would get no link: links go only to the"
            f" people the step lists ({', '.join(people) if people else 'none'}; an escalation's"
            " add_approvers count too); members of a group decide in the inbox, where they sign in",
        )
    ]


def _texts(step: Step) -> list[tuple[str, str]]:
    """Template and expression strings that belong to the step itself (not nested steps)."""
    out: list[tuple[str, str]] = []
    if step.when:
        out.append((".when", step.when))
    if isinstance(step, TaskStep):
        out.extend((f".input{p}", t) for p, t in template_strings(step.input))
    elif isinstance(step, ConditionStep):
        out.append((".if", step.if_))
    elif isinstance(step, SwitchStep):
        out.extend((f".cases[{i}].when", c.when) for i, c in enumerate(step.cases))
    elif isinstance(step, ForeachStep):
        out.append((".items", step.items))
        out.extend((f".output{p}", t) for p, t in template_strings(step.output))
    elif isinstance(step, SetStep):
        out.extend((f".vars{p}", t) for p, t in template_strings(step.vars))
    elif isinstance(step, SucceedStep):
        out.extend((f".output{p}", t) for p, t in template_strings(step.output))
        out.extend((".message", t) for _, t in template_strings(step.message))
    elif isinstance(step, FailStep):
        out.extend((".message", t) for _, t in template_strings(step.message))
    elif isinstance(step, DelayStep):
        out.extend((".duration", t) for _, t in template_strings(step.duration))
        out.extend((".until", t) for _, t in template_strings(step.until))
        if step.business_hours is not None:
            out.extend(
                (".business_hours.timezone", t) for _, t in template_strings(step.business_hours.timezone)
            )
    elif isinstance(step, ApprovalStep):
        out.extend((".message", t) for _, t in template_strings(step.message))
    elif isinstance(step, WaitForEventStep):
        out.extend((".key", t) for _, t in template_strings(step.key))
    elif isinstance(step, SubflowStep):
        out.extend((f".input{p}", t) for p, t in template_strings(step.input))
    elif isinstance(step, HumanTaskStep):
        out.extend((".title", t) for _, t in template_strings(step.title))
        out.extend((".description", t) for _, t in template_strings(step.description))
    elif isinstance(step, ParallelStep):
        pass  # only nested steps
    else:
        assert_never(step)
    return out


# ---------------------------------------------------------------------------- triggers and input

LEGACY_TRIGGER_MESSAGE = (
    "the legacy 'trigger' field starts nothing and is refused in new definitions: declare 'triggers'"
    " instead, a list of schedule, webhook, event or row_change triggers (see the README, Triggers),"
    " or remove it"
)


def legacy_trigger_problems(document: Definition | Mapping[str, Any] | Any) -> list[Problem]:
    """The legacy ``trigger`` field in a *new* definition (a file, text or mapping being validated,
    started or registered). Stored definitions and recorded runs that have it still load: they
    are parsed with :func:`load_definition`, which accepts it."""
    if isinstance(document, Definition):
        present = "trigger" in document.model_fields_set
    else:
        present = isinstance(document, Mapping) and "trigger" in document
    return [Problem("$.trigger", LEGACY_TRIGGER_MESSAGE)] if present else []


def _cron_problem(cron: str) -> str | None:
    text = cron.strip()
    if not text or len(text) > 200:
        return "a cron expression is 1 to 200 characters"
    if text.startswith("@"):
        known = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
        if text not in known:
            return (
                f"unknown cron shorthand {text[:50]!r} (known: {', '.join(known)}; for intervals use 'every')"
            )
        return None
    fields = text.split()
    if fields and fields[0].startswith(("CRON_TZ=", "TZ=")):
        return "set the time zone with the trigger's 'timezone', not in the cron expression"
    if not 5 <= len(fields) <= 7:
        return (
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}"
        )
    if any(not re.fullmatch(r"[A-Za-z0-9*/,?#LW-]+", field) for field in fields):
        return "a cron field holds only digits, names, '*', '/', ',', '-', '?', 'L', 'W' and '#'"
    return None


def schedule_problems(definition: Definition) -> list[Problem]:
    """A new definition's schedule triggers as Temporal takes them: each field of a cron
    expression in its range (``61 * * * *`` was registered and made active, and its schedule could
    never be written: exit 3, "once Temporal is reachable"; so were the 6- and 7-field forms'
    fields, ``0 0 1 1 * 1999`` among them), and a catch-up window of at least
    :data:`MIN_CATCHUP_WINDOW` (probes)."""
    from interpreter.model import ScheduleTrigger

    problems: list[Problem] = []
    for index, trigger in enumerate(definition.triggers):
        if not isinstance(trigger, ScheduleTrigger):
            continue
        path = f"$.triggers[{index}]"
        fields = (trigger.cron or "").split()
        kinds = {
            5: _CRON_FIELDS,
            6: (*_CRON_FIELDS, _CRON_YEAR),
            7: (_CRON_SECOND, *_CRON_FIELDS, _CRON_YEAR),
        }.get(len(fields), ())
        if kinds and _cron_problem(trigger.cron or "") is None:
            for field, (name, low, high, names) in zip(fields, kinds, strict=True):
                message = _cron_field_problem(field, name, low, high, names)
                if message:
                    problems.append(Problem(f"{path}.cron", message))
                    break
        if parse_duration(trigger.catchup_window) < MIN_CATCHUP_WINDOW:
            problems.append(Problem(f"{path}.catchup_window", "Temporal's shortest catch-up window is 10s"))
    return problems


def trigger_problems(definition: Definition) -> list[Problem]:
    """The whole-definition rules of ``triggers`` and ``input_schema``: trigger ids unique per
    definition (a schedule's id is derived from it), cron expressions well formed, time zones known,
    and the schema usable.

    Each schedule's fixed input is checked against the schema where a definition is registered or
    validated (``activities.input_check.schedule_input_problems``, in a separate process with a
    deadline), never here: this runs wherever a stored definition is loaded, and a schema can make
    checking an input slow (a ``pattern`` that backtracks, ``uniqueItems``).
    """
    from interpreter.business_hours import check_timezone
    from interpreter.input_schema import schema_problems
    from interpreter.model import ScheduleTrigger

    problems: list[Problem] = []
    if definition.input_schema is not None:
        problems.extend(schema_problems(definition.input_schema))
    seen: dict[str, int] = {}
    for index, trigger in enumerate(definition.triggers):
        path = f"$.triggers[{index}]"
        if trigger.id in seen:
            problems.append(
                Problem(
                    f"{path}.id",
                    f"duplicate trigger id {trigger.id!r} (first at $.triggers[{seen[trigger.id]}])",
                )
            )
        else:
            seen[trigger.id] = index
        if not isinstance(trigger, ScheduleTrigger):
            continue
        if trigger.cron is not None:
            message = _cron_problem(trigger.cron)
            if message:
                problems.append(Problem(f"{path}.cron", message))
        if trigger.every is not None and parse_duration(trigger.every).total_seconds() < 1:
            problems.append(Problem(f"{path}.every", "a schedule fires at most every second"))
        try:
            check_timezone(trigger.timezone)
        except ValueError as err:
            problems.append(Problem(f"{path}.timezone", str(err)))
    return problems
