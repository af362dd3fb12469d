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

import functools
import importlib
import importlib.metadata
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import jsonschema
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


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


STATIC_TEXT_ERROR = "static_text"
"""The pydantic error type of a field that must be literal text: reported by ``wfa validate``
whether or not the value is a template (every other rule is checked at run time for templates)."""

_TEMPLATE_SYNTAX = ("{{", "{%", "{#")


def _static_text(field: str, value: str) -> str:
    """Refuses template syntax in a field that must be static text (SQL statements)."""
    if any(marker in value for marker in _TEMPLATE_SYNTAX):
        raise PydanticCustomError(
            STATIC_TEXT_ERROR,
            "{field} must be static text: templates are refused here (pass run data as parameters,"
            " which are bound, never spliced into the text)",
            {"field": field},
        )
    return value


SqlScalar = str | int | float | bool | None
"""A value bound to a SQL parameter (lists bind as PostgreSQL arrays)."""


class SqlInput(ActionInput):
    """Input of the ``sql`` action: one statement against a connection named in the worker's
    configuration (``WFA_SQL_CONNECTIONS``, per tenant).

    Attributes:
        connection: Name of the tenant's configured connection (its URL, read-only flag and
            statement timeout are configuration, never the definition's).
        statement: The SQL text, static: templates are refused at validation. Values are named
            ``:name`` placeholders filled from ``parameters``.
        parameters: Values bound to the placeholders (templated; bound by the driver, never
            spliced into the text).
        max_rows: Rows returned at most; more set ``truncated`` in the output.
        timeout_s: Statement timeout in seconds (the database cancels the statement); at most
            the connection's own timeout when it has one.
    """

    connection: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    statement: str = Field(min_length=1, max_length=100_000, json_schema_extra={"x-static": True})
    parameters: dict[str, SqlScalar | list[SqlScalar]] = Field(default_factory=dict)
    max_rows: int = Field(default=1000, ge=1, le=10_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("statement")
    @classmethod
    def _static_statement(cls, value: str) -> str:
        return _static_text("statement", value)

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"parameter name {name!r} must be an identifier (used as :{name})")
        return value


class LlmMessage(ActionInput):
    """One chat message of the ``llm`` action's prompt."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class LlmInput(ActionInput):
    """Input of the ``llm`` action: an OpenAI-compatible chat completion.

    Attributes:
        connection: Name of the tenant's configured model endpoint (``WFA_LLM_CONNECTIONS``:
            base URL, default model, API key as a secret reference).
        model: Overrides the connection's model.
        system: A system message, put first.
        prompt: The user message (templated).
        messages: More messages, after ``system`` and before ``prompt``.
        json_schema: A JSON Schema the answer must satisfy: the answer's content is parsed as
            JSON and validated; an invalid answer fails the attempt (``LlmAnswerInvalid``, retried
            by the step's policy).
        temperature: Sampling temperature.
        max_tokens: Most tokens the answer may use.
        timeout_s: Total time allowed for the request, in seconds.
    """

    connection: str = Field(default="default", min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system: str | None = Field(default=None, max_length=200_000)
    prompt: str | None = Field(default=None, max_length=200_000)
    messages: list[LlmMessage] = Field(default_factory=list, max_length=100)
    json_schema: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout_s: float = Field(default=60.0, gt=0, le=600)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not _has_template(value):
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as err:
                raise ValueError(f"not a valid JSON Schema: {err.message}") from None
        return value

    @model_validator(mode="after")
    def _has_a_message(self) -> LlmInput:
        if self.prompt is None and not self.messages:
            raise ValueError("give a prompt or messages")
        return self


ACTION_INPUTS: Mapping[str, type[ActionInput]] = MappingProxyType(
    {"http": HttpInput, "echo": EchoInput, "sql": SqlInput, "llm": LlmInput}
)
"""Every action, by the name definitions use, with the model of its input. A new action is one
entry here plus its activity (see the README's contributing section)."""

KNOWN_ACTIONS: tuple[str, ...] = tuple(ACTION_INPUTS)
"""The action names, in registry order."""


@functools.cache
def static_input_fields(action: str) -> frozenset[str]:
    """The input fields of a built-in action that are static text (``x-static``: the SQL
    statement): validation refuses templates there and the engine never renders them, so even a
    run started without validation cannot splice data into them. Plugins' models are not
    consulted: what the engine renders must not depend on which plugins a worker loaded."""
    model = ACTION_INPUTS.get(action)
    if model is None:
        return frozenset()
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("x-static")
    )


_M = TypeVar("_M", bound=ActionInput)


def parse_action_input(model: type[_M], data: Mapping[str, Any]) -> _M:
    """Validates an action's rendered input as the JSON it is (strict mode, as in definitions).

    Raises:
        pydantic.ValidationError: Naming each bad field.
    """
    return model.model_validate_json(json.dumps(dict(data), allow_nan=False))


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _has_template(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return _is_template(value)


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
        if (
            skip_templates
            and templated
            and error["type"] not in ("extra_forbidden", "missing", STATIC_TEXT_ERROR)
        ):
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
    model = action_inputs()[action]
    try:
        parse_action_input(model, data)
    except pydantic.ValidationError as err:
        return _errors_by_place(data, err, skip_templates=True)
    except ValueError as err:  # NaN or infinity: not JSON
        return [((), f"not representable as JSON: {err}", frozenset({"value_error"}))]
    return []


# ------------------------------------------------------------------------------ your own actions

ACTION_ENTRY_POINT_GROUP = "wfa.actions"
"""The entry point group a package registers its actions in: each entry point names an
:class:`ActionPlugin` (``greet = "team_actions.spec:GREET"``)."""


@dataclass(frozen=True)
class ActionPlugin:
    """An action a team ships as a Python package (see the README, "Your own actions").

    The object lives in a module that imports only the models, so validation (``wfa validate``,
    the client) loads it without importing the implementation; only a worker imports
    ``function``.

    Attributes:
        name: The action name definitions use; may not shadow a built-in action.
        input_model: The input model (a subclass of :class:`ActionInput`), checked at validation
            like a built-in action's and at run time before the function is called.
        function: ``"module:attribute"`` of ``async def f(input: InputModel, context: ActionContext)
            -> OutputModel``, imported by the worker only.
        output_model: The output model (the function's result is validated and dumped with it).
    """

    name: str
    input_model: type[ActionInput]
    function: str
    output_model: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        if not _ACTION_NAME.fullmatch(self.name):
            raise ValueError(f"action plugin name {self.name!r} must match {_ACTION_NAME.pattern}")
        if not (isinstance(self.input_model, type) and issubclass(self.input_model, ActionInput)):
            raise ValueError(f"action plugin {self.name!r}: input_model must subclass ActionInput")
        if ":" not in self.function:
            raise ValueError(f"action plugin {self.name!r}: function must be 'module:attribute'")


_ACTION_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")

_plugins: dict[str, ActionPlugin] = {}


class ActionPluginError(ValueError):
    """A plugin cannot be loaded or registered (names the plugin and the problem)."""


def register_action_plugin(plugin: ActionPlugin) -> None:
    """Adds ``plugin`` to the actions this process knows (validation, schema of inputs, worker).

    Registering the same plugin again is a no-op.

    Raises:
        ActionPluginError: The name is a built-in action's or another plugin's.
    """
    if plugin.name in ACTION_INPUTS:
        raise ActionPluginError(f"action plugin {plugin.name!r} would shadow the built-in action")
    existing = _plugins.get(plugin.name)
    if existing is not None and existing != plugin:
        raise ActionPluginError(
            f"two action plugins are named {plugin.name!r} ({existing.function}, {plugin.function})"
        )
    _plugins[plugin.name] = plugin


def unregister_action_plugins() -> None:
    """Forgets every registered plugin (tests)."""
    _plugins.clear()


def action_plugins() -> tuple[ActionPlugin, ...]:
    """The registered plugins, by name."""
    return tuple(_plugins[name] for name in sorted(_plugins))


def action_inputs() -> Mapping[str, type[ActionInput]]:
    """Every action this process knows with its input model: the built-in ones, then plugins."""
    return MappingProxyType({**ACTION_INPUTS, **{p.name: p.input_model for p in action_plugins()}})


def known_actions() -> tuple[str, ...]:
    """The names of :func:`action_inputs`."""
    return tuple(action_inputs())


def load_object(reference: str) -> Any:
    """The object ``"module:attribute.path"`` names (the module itself without an attribute)."""
    module_name, _, attribute = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj


def _plugins_in(obj: Any, where: str) -> list[ActionPlugin]:
    if isinstance(obj, ActionPlugin):
        return [obj]
    if isinstance(obj, list | tuple) and all(isinstance(item, ActionPlugin) for item in obj):
        return list(obj)
    found = (
        [value for value in vars(obj).values() if isinstance(value, ActionPlugin)]
        if hasattr(obj, "__dict__")
        else []
    )
    if not found:
        raise ActionPluginError(f"{where} holds no ActionPlugin")
    return found


def load_action_plugins(
    modules: Sequence[str] = (), *, entry_points: bool = True
) -> tuple[ActionPlugin, ...]:
    """Finds and registers the action plugins: entry points of the group
    :data:`ACTION_ENTRY_POINT_GROUP` and the given ``module`` (or ``module:attribute``) names.

    Only the plugin objects are imported (a module of models); the functions are not.

    Args:
        modules: Module paths (the worker's and CLI's ``WFA_ACTION_MODULES``).
        entry_points: Look at installed packages' entry points too.

    Returns:
        Every registered plugin.

    Raises:
        ActionPluginError: A plugin cannot be imported, holds no plugin, or clashes by name.
    """
    sources: list[tuple[str, Callable[[], Any]]] = []
    if entry_points:
        for entry in importlib.metadata.entry_points(group=ACTION_ENTRY_POINT_GROUP):
            sources.append((f"entry point {entry.name!r} ({entry.value})", entry.load))
    for module in modules:
        if module.strip():
            reference = module.strip()
            sources.append((f"module {reference!r}", functools.partial(load_object, reference)))
    for where, load in sources:
        try:
            obj = load()
        except Exception as err:  # an import error of any kind in a team's package
            raise ActionPluginError(
                f"action plugin {where} cannot be loaded: {type(err).__name__}: {err}"
            ) from None
        for plugin in _plugins_in(obj, where):
            register_action_plugin(plugin)
    return action_plugins()
