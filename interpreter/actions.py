"""The actions: their input models, in one registry, and the wire contract of every action activity.

Every action (``http``, ``echo``, ...) is a Temporal activity whose name is the action name used in
definitions. Each takes one :class:`ActionRequest` and returns one :class:`ActionResult`, so the
workflow can dispatch any action without knowing its input shape.

:data:`ACTION_INPUTS` maps each action name to the pydantic model of its input. It is the one list
of actions: definition validation refuses a task whose action is not in it and checks the task's
literal input against the model (:func:`action_input_errors`; template strings are left for run
time), the published JSON Schema describes each action's input from it, and each activity parses
its rendered input with the same model (:func:`parse_action_input`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator


class RetryMode(StrEnum):
    """How the delay between attempts grows."""

    EXPONENTIAL = "exponential"
    CONSTANT = "constant"
    LINEAR = "linear"


class ActionRequest(BaseModel):
    """Input of every action activity.

    Attributes:
        step_id: Path of the step in the run, e.g. ``notify`` or ``reviews[3].score``.
        idempotency_key: Stable across retries of this step execution, unique per run and step
            execution; actions pass it to the receiving system (``Idempotency-Key`` for HTTP).
        input: The step's input after template rendering. May contain ``${secret:NAME}``
            references that only the activity resolves, so secrets never enter workflow history.
        retry_mode: The step's retry preset. For ``linear`` the activity computes the next delay
            itself (Temporal's server-side policy is exponential only).
        initial_interval_s: First retry delay in seconds (the linear increment).
        maximum_interval_s: Cap on any retry delay in seconds.
        tenant: The run's tenant: the only tenant whose secrets the action may resolve.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_id: str
    idempotency_key: str
    input: dict[str, Any] = Field(default_factory=dict)
    retry_mode: RetryMode = RetryMode.EXPONENTIAL
    initial_interval_s: float = 1.0
    maximum_interval_s: float | None = None
    tenant: str = "default"


class ActionResult(BaseModel):
    """Output of every action activity.

    Attributes:
        output: The action's JSON-compatible output, stored under the step id for later steps.
        attempt: The attempt number that succeeded (1 for the first try).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Any = None
    attempt: int = 1


def linear_delay_s(attempt: int, initial_interval_s: float, maximum_interval_s: float | None) -> float:
    """Delay before the attempt after ``attempt`` under the linear preset: initial * attempt, capped.

    Args:
        attempt: The attempt that just failed (1-based).
        initial_interval_s: The first delay, also the increment.
        maximum_interval_s: Optional cap.

    Returns:
        The delay in seconds.
    """
    delay = initial_interval_s * max(attempt, 1)
    if maximum_interval_s is not None:
        delay = min(delay, maximum_interval_s)
    return delay


# --------------------------------------------------------------------------------- action inputs


class ActionInput(BaseModel):
    """Base of every action's input model: strict like the definition models (no coercion, unknown
    fields refused), immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

StatusRange = Literal["1xx", "2xx", "3xx", "4xx", "5xx", "any"]
"""A class of HTTP statuses in ``accept_status``: ``"4xx"`` is 400-499, ``"any"`` every status."""


def status_accepted(status: int, accept_status: list[int | StatusRange]) -> bool:
    """Whether ``status`` counts as success under ``accept_status`` (empty: any 2xx)."""
    if not accept_status:
        return 200 <= status < 300
    for accepted in accept_status:
        if accepted in ("any", status):
            return True
        if isinstance(accepted, str) and status // 100 == int(accepted[0]):
            return True
    return False


class HttpInput(ActionInput):
    """Input of the ``http`` action (the step's ``input`` object).

    String values may contain ``${secret:NAME}`` references; they are resolved on the worker just
    before sending and never appear in the output or in errors.

    Attributes:
        method: HTTP method, case-insensitive on input.
        url: Absolute ``http``/``https`` URL.
        headers: Request headers. ``Idempotency-Key`` defaults to the step's idempotency key.
        params: Query parameters added to the URL.
        json_body: JSON request body, given as ``json`` in the input; omitted or null sends none.
        timeout_s: Total time allowed for the request, response included, in seconds.
        accept_status: Statuses counted as success: codes (``404``) and classes (``"2xx"``,
            ``"4xx"``, ``"5xx"``, ``"any"``); empty means any 2xx. An accepted status is the step's
            output whatever it is, so a later ``switch`` can branch on ``status_code``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    method: HttpMethod = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    accept_status: list[int | StatusRange] = Field(default_factory=list)

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("must be an absolute http:// or https:// URL")
        if not parts.netloc:
            raise ValueError("must include a host")
        return value.strip()

    @field_validator("headers")
    @classmethod
    def _no_header_injection(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not name or any(c in name for c in " \t\r\n:") or any(c in header_value for c in "\r\n"):
                raise ValueError(f"header {name!r} has an invalid name or a line break in its value")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _scalar_params(cls, value: Any) -> Any:
        # Checked here so the error names the parameter instead of listing every union member.
        if isinstance(value, dict):
            for name, param in value.items():
                if not isinstance(param, str | int | float | bool):
                    raise ValueError(f"parameter {name!r} must be a string, number or boolean")
        return value

    @field_validator("accept_status")
    @classmethod
    def _valid_statuses(cls, value: list[int | StatusRange]) -> list[int | StatusRange]:
        for status in value:
            if isinstance(status, int) and not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status code")
        return value


class EchoInput(ActionInput):
    """Input of the ``echo`` action, which returns ``value`` or else its whole input.

    Any other key is data to echo back (the whole input is the output without ``value``), so
    unknown keys are allowed here, unlike in every other model.

    Attributes:
        value: What to return.
        sleep_s: Seconds to wait first (heartbeating).
        fail: Error type to raise on purpose.
        succeed_on_attempt: First attempt that stops failing; without it every attempt fails.
        non_retryable: Makes the ``fail`` error non-retryable.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    value: Any = None
    sleep_s: float = Field(default=0, ge=0, le=86_400)
    fail: str | None = Field(default=None, min_length=1, max_length=200)
    succeed_on_attempt: int | None = Field(default=None, ge=1)
    non_retryable: bool = False


ACTION_INPUTS: Mapping[str, type[ActionInput]] = MappingProxyType({"http": HttpInput, "echo": EchoInput})
"""Every action, by the name definitions use, with the model of its input. A new action is one
entry here plus its activity (see the README's contributing section)."""

KNOWN_ACTIONS: tuple[str, ...] = tuple(ACTION_INPUTS)
"""The action names, in registry order."""

_M = TypeVar("_M", bound=ActionInput)


def parse_action_input(model: type[_M], data: Mapping[str, Any]) -> _M:
    """Validates an action's rendered input as the JSON it is (strict mode, as in definitions).

    Raises:
        pydantic.ValidationError: Naming each bad field.
    """
    return model.model_validate_json(json.dumps(dict(data), allow_nan=False))


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _in_document(data: Any, loc: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], bool]:
    """The part of a pydantic error location that names places in ``data`` (union member names
    such as ``int`` are left out), and whether a template string lies on the way."""
    path: list[int | str] = []
    templated = False
    for part in loc:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_list or (isinstance(data, Mapping) and part in data):
            data = data[part]
        elif isinstance(part, str) and path and not isinstance(data, Mapping):
            continue  # a union member's name, not a key of the document
        else:
            path.append(part)  # a missing or unknown key
            data = None
            continue
        path.append(part)
        templated = templated or _is_template(data)
    return tuple(path), templated


def _either(messages: list[str]) -> str:
    prefix = "Input should be "
    if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
        return "should be " + " or ".join(m.removeprefix(prefix) for m in messages)
    return " or ".join(messages)


def _errors_by_place(
    data: Any, err: pydantic.ValidationError, *, skip_templates: bool
) -> list[tuple[tuple[int | str, ...], str, frozenset[str]]]:
    """``(location, message, pydantic error types)``, one per place in ``data``."""
    found: dict[tuple[int | str, ...], tuple[list[str], set[str]]] = {}
    for error in err.errors(include_url=False, include_input=False):
        loc, templated = _in_document(data, tuple(error["loc"]))
        if skip_templates and templated and error["type"] not in ("extra_forbidden", "missing"):
            continue  # checked once rendered, at run time
        message = {"extra_forbidden": "unknown field", "missing": "required field is missing"}.get(
            error["type"], str(error["msg"]).removeprefix("Value error, ")
        )
        messages, kinds = found.setdefault(loc, ([], set()))
        kinds.add(error["type"])
        if message not in messages:
            messages.append(message)
    return [(loc, _either(messages), frozenset(kinds)) for loc, (messages, kinds) in found.items()]


def field_name(loc: tuple[int | str, ...]) -> str:
    """A location inside an action's input as people write it: ``accept_status[2]``, ``headers.X``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or "<input>"


def input_problems(data: Mapping[str, Any], err: pydantic.ValidationError) -> list[dict[str, str]]:
    """An activity's rendered input refused by its model, as ``{"field", "error"}`` items (no
    values: they may be large or secret), one per field."""
    return [
        {"field": field_name(loc), "error": message}
        for loc, message, _ in _errors_by_place(data, err, skip_templates=False)
    ]


def action_input_errors(action: str, data: Mapping[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """The problems of a task's literal input, before any template is rendered.

    A template string may stand where a typed value is expected (``"timeout_s": "{{ input.t }}"``):
    its value is checked at run time, when the activity validates the rendered input with the same
    model. Unknown and missing fields are problems whatever the values.

    Returns:
        ``(location, message)`` pairs, one per place; the location is the path of keys and indexes
        inside the input.
    """
    return [(loc, message) for loc, message, _ in action_input_error_kinds(action, data)]


def action_input_error_kinds(
    action: str, data: Mapping[str, Any]
) -> list[tuple[tuple[int | str, ...], str, frozenset[str]]]:
    """As :func:`action_input_errors`, with the pydantic error types found at each place
    (``value_error`` for a custom rule, ``int_type`` for a wrong type, ...)."""
    model = ACTION_INPUTS[action]
    try:
        parse_action_input(model, data)
    except pydantic.ValidationError as err:
        return _errors_by_place(data, err, skip_templates=True)
    except ValueError as err:  # NaN or infinity: not JSON
        return [((), f"not representable as JSON: {err}", frozenset({"value_error"}))]
    return []
