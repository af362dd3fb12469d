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
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import jsonschema
import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
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


CLIENT_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
)
"""Request headers only the HTTP client sets (lower-case), refused in ``http`` and ``webhook``
inputs with every ``Proxy-*`` header: ``Host`` names the virtual host of the checked address the
connection goes to, the others frame the message or belong to one connection hop (a definition's
``Transfer-Encoding`` or ``Content-Length`` beside the client's would smuggle a second request)."""

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 token)."""

_HEADER_VALUE_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters an HTTP field value cannot carry (tab is allowed)."""


def _request_headers(value: dict[str, str]) -> dict[str, str]:
    """Refuses a header an input may not set: a malformed name, a line break or other control
    character in a value, or one of the client's own headers (:data:`CLIENT_HEADERS`, ``Proxy-*``).
    Names are compared case-insensitively; the error names the header."""
    for name, header_value in value.items():
        if not _HEADER_NAME.fullmatch(name) or _HEADER_VALUE_CONTROLS.search(header_value):
            raise ValueError(
                f"header {name!r} has an invalid name or a line break or other control character in its value"
            )
        lowered = name.lower()
        if lowered in CLIENT_HEADERS or lowered.startswith("proxy-"):
            raise ValueError(f"header {name!r} is set by the HTTP client, not by the input")
    return value


class HttpInput(ActionInput):
    """Input of the ``http`` action (the step's ``input`` object).

    String values may contain ``${secret:NAME}`` references; they are resolved on the worker just
    before sending and never appear in the output or in errors.

    Attributes:
        method: HTTP method, case-insensitive on input.
        url: Absolute ``http``/``https`` URL.
        headers: Request headers. ``Idempotency-Key`` defaults to the step's idempotency key.
            ``Host``, ``Content-Length``, ``Transfer-Encoding``, ``Connection``, the other
            hop-by-hop headers and ``Proxy-*`` are the client's and refused (any case).
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
        return _request_headers(value)

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


# ------------------------------------------------------------- messaging: email, sms, call, webhook

ACCOUNT_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
"""An ``account``: the prefix of the tenant's settings an action reads (``SMTP`` -> ``SMTP_HOST``)."""

MAX_EMAIL_RECIPIENTS = 100
"""Most addresses in to, cc and bcc together."""


LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
"""Every character Python splits lines at (``str.splitlines``): the stdlib's email headers refuse
them all, so an email input refuses them where they would land in a header (addresses, subject,
attachment file names) instead of failing at send time."""


def _address(value: str) -> str:
    """An email address as people write it: ``a@b.example`` or ``Name <a@b.example>``, one line."""
    from email.utils import parseaddr  # stdlib, pure

    text = value.strip()
    if not text or "\0" in text or not LINE_BREAKS.isdisjoint(text) or len(text) > 320:
        raise ValueError("must be one email address on one line")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{text[:80]!r} holds a control character")
    _, addr = parseaddr(text)
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in addr):
        raise ValueError(f"{text[:80]!r} is not an email address")
    if not addr.isascii():
        # SMTP without SMTPUTF8 takes ASCII addresses only: a probe's "a@bü.example" failed at
        # send time with a retried UnicodeEncodeError. A display name may be in any script.
        raise ValueError(
            f"{addr[:80]!r} is not an ASCII address (write an international domain in its xn-- form;"
            " a name before the address may be in any script)"
        )
    return text


EmailAddress = Annotated[str, AfterValidator(_address)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Addresses = Annotated[
    list[EmailAddress], BeforeValidator(_one_or_many, json_schema_input_type=str | list[str])
]
"""One address or a list of them (a list once validated)."""

Recipients = Annotated[
    list[EmailAddress],
    BeforeValidator(_one_or_many, json_schema_input_type=str | Annotated[list[str], Field(min_length=1)]),
    Field(min_length=1),
]
"""One address or a non-empty list of them."""


def _phone(value: str) -> str:
    if not re.fullmatch(r"(?:whatsapp:)?\+[1-9][0-9]{6,14}", value.strip()):
        raise ValueError("must be a phone number in E.164 form, e.g. +13125550100 (or whatsapp:+1...)")
    return value.strip()


PhoneNumber = Annotated[str, AfterValidator(_phone)]


def _checked_http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an absolute http:// or https:// URL")
    if not parts.netloc:
        raise ValueError("must include a host")
    return value.strip()


HttpUrl = Annotated[str, AfterValidator(_checked_http_url)]


def _filename(value: str) -> str:
    if not value or len(value) > 255 or any(c in value for c in "/\\\0") or not LINE_BREAKS.isdisjoint(value):
        raise ValueError("must be a file name (1-255 characters, no path, no line break)")
    return value


class EmailAttachment(ActionInput):
    """One attachment of an ``email``: its content from run data, as text or base64.

    Attributes:
        filename: Name shown to the recipient (no path, no line breaks).
        content_type: MIME type, e.g. ``application/pdf``.
        content_text: The content as text (sent as UTF-8).
        content_base64: The content, base64-encoded (binary files).
    """

    filename: Annotated[str, AfterValidator(_filename)]
    content_type: str = Field(
        default="application/octet-stream", pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$"
    )
    content_text: str | None = None
    content_base64: str | None = None

    @model_validator(mode="after")
    def _one_content(self) -> EmailAttachment:
        if (self.content_text is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of content_text and content_base64")
        return self


class EmailInput(ActionInput):
    """Input of the ``email`` action: one message sent through the tenant's SMTP server.

    The server, its port, TLS mode, credentials and default sender are the tenant's settings
    ``<account>_HOST``, ``_PORT``, ``_SECURITY``, ``_USERNAME``, ``_PASSWORD``, ``_FROM`` (scoped
    secrets), never part of a definition.

    Attributes:
        to: Recipients (one address or a list).
        cc: Copy recipients.
        bcc: Blind copy recipients (in the envelope only, never in a header).
        from_: Sender, given as ``from``; default the tenant's ``<account>_FROM``.
        reply_to: ``Reply-To`` address.
        subject: Subject line (CR, LF and tab become spaces; other line separators such as
            ``\\x0c`` or ``\\u2028`` are refused).
        text: Plain-text body.
        html: HTML body; rendered with autoescaping (data written into it is escaped). Without
            ``text``, the text part is derived from it.
        attachments: Files from run data.
        account: Prefix of the tenant's SMTP settings (default ``SMTP``).
        timeout_s: Time allowed for the whole SMTP exchange.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    to: Recipients
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(default_factory=list)
    from_: EmailAddress | None = Field(default=None, alias="from")
    reply_to: EmailAddress | None = None
    subject: str = Field(max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[EmailAttachment] = Field(default_factory=list, max_length=20)
    account: str = Field(default="SMTP", pattern=ACCOUNT_PATTERN)
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, value: str) -> str:
        # CR, LF and tab become spaces (build_message); any other line or paragraph separator is
        # refused here, where the error names the field, not by the stdlib at send time.
        if not LINE_BREAKS.isdisjoint(value.translate({ord("\r"): None, ord("\n"): None})):
            raise ValueError(
                "must be one line: no vertical tab, form feed, file/group/record separator, NEL,"
                " or Unicode line or paragraph separator"
            )
        return value

    @model_validator(mode="after")
    def _has_body(self) -> EmailInput:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        if len(self.to) + len(self.cc) + len(self.bcc) > MAX_EMAIL_RECIPIENTS:
            raise ValueError(f"at most {MAX_EMAIL_RECIPIENTS} recipients in to, cc and bcc together")
        return self


class EmailResult(ActionInput):
    """Output of the ``email`` action.

    Attributes:
        message_id: The ``Message-ID`` header sent: the same for every attempt of the step, so a
            duplicate delivery after a retry is recognisable.
        accepted: Addresses the server accepted.
        refused: Addresses the server refused, each with its reply (``550 5.1.1 ...``), when
            others were accepted.
    """

    message_id: str
    accepted: list[str]
    refused: dict[str, str] = Field(default_factory=dict)


class SmsInput(ActionInput):
    """Input of the ``sms`` action: a text message through a Twilio-shaped API.

    Attributes:
        to: Recipient in E.164 form (``+13125550100``).
        from_: Sender number, given as ``from``; default the tenant's ``<account>_FROM``.
        body: The message text.
        status_callback: URL the provider reports delivery status changes to.
        account: Prefix of the tenant's provider settings (default ``TWILIO``).
        timeout_s: Time allowed for the request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    to: PhoneNumber
    from_: PhoneNumber | None = Field(default=None, alias="from")
    body: str = Field(min_length=1, max_length=1600)
    status_callback: HttpUrl | None = None
    account: str = Field(default="TWILIO", pattern=ACCOUNT_PATTERN)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class CallInput(ActionInput):
    """Input of the ``call`` action: an outgoing phone call through a Twilio-shaped API.

    Attributes:
        to: Number to call, E.164.
        from_: Caller number, given as ``from``; default the tenant's ``<account>_FROM``.
        twiml: What the call says (TwiML, e.g. ``<Response><Say>...</Say></Response>``).
        url: Or: where the provider fetches the TwiML from.
        status_callback: URL the provider reports call status changes to.
        account: Prefix of the tenant's provider settings (default ``TWILIO``).
        timeout_s: Time allowed for the request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    to: PhoneNumber
    from_: PhoneNumber | None = Field(default=None, alias="from")
    twiml: str | None = Field(default=None, min_length=1, max_length=4000)
    url: HttpUrl | None = None
    status_callback: HttpUrl | None = None
    account: str = Field(default="TWILIO", pattern=ACCOUNT_PATTERN)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_script(self) -> CallInput:
        if (self.twiml is None) == (self.url is None):
            raise ValueError("give exactly one of twiml and url")
        return self


class SmsStatusInput(ActionInput):
    """Input of the ``sms_status`` action: reads a sent message's delivery status.

    Attributes:
        sid: The provider's message id (the ``sid`` output of an ``sms`` step).
        account: Prefix of the tenant's provider settings (default ``TWILIO``).
        timeout_s: Time allowed for the request.
    """

    sid: str = Field(pattern=r"^[A-Za-z0-9]{2,64}$")
    account: str = Field(default="TWILIO", pattern=ACCOUNT_PATTERN)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class CallStatusInput(ActionInput):
    """Input of the ``call_status`` action: reads a placed call's status.

    Attributes:
        sid: The provider's call id (the ``sid`` output of a ``call`` step).
        account: Prefix of the tenant's provider settings (default ``TWILIO``).
        timeout_s: Time allowed for the request.
    """

    sid: str = Field(pattern=r"^[A-Za-z0-9]{2,64}$")
    account: str = Field(default="TWILIO", pattern=ACCOUNT_PATTERN)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class MessageResult(ActionInput):
    """Output of ``sms``, ``call`` and ``sms_status``: the provider's record of the message or call.

    Attributes:
        sid: The provider's id of the message or call.
        status: Its status (``queued``, ``sent``, ``delivered``, ``failed``, ``undelivered``, ...).
        to: Recipient.
        from_: Sender, as ``from``.
        error_code: The provider's error code for a failed delivery, if any.
        error_message: Its message.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    sid: str
    status: str | None = None
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    error_code: int | str | None = None
    error_message: str | None = None


class WebhookInput(ActionInput):
    """Input of the ``webhook`` action: a JSON POST signed per Standard Webhooks.

    Attributes:
        url: Receiver, absolute ``http``/``https``.
        payload: The JSON body.
        secret: Name of the tenant's signing secret (``whsec_...``); default ``WEBHOOK_SECRET``.
        headers: More request headers (the ``webhook-*`` ones are the action's; ``Host``, the framing
            and hop-by-hop headers and ``Proxy-*`` are the client's: all refused).
        timeout_s: Time allowed for the request.
    """

    url: HttpUrl
    payload: Any = None
    secret: str = Field(default="WEBHOOK_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("headers")
    @classmethod
    def _own_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in _request_headers(value):
            if name.lower().startswith("webhook-") or name.lower() in ("content-type", "idempotency-key"):
                raise ValueError(f"header {name!r} is set by the action")
        return value


class CallStatusResult(ActionInput):
    """Output of ``call_status``: the provider's record of the call.

    Attributes:
        sid: The provider's id of the call.
        status: Its status (``queued``, ``ringing``, ``in-progress``, ``completed``, ``busy``,
            ``no-answer``, ``failed``, ``canceled``).
        to: The number called.
        from_: The caller number, as ``from``.
        duration: Length of the call in seconds once it ended, else ``None``.
        answered_by: Who answered (``human``, ``machine_start``, ...) when the provider detects it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    sid: str
    status: str | None = None
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    duration: int | None = None
    answered_by: str | None = None


class WebhookResult(ActionInput):
    """Output of the ``webhook`` action.

    Attributes:
        status_code: The receiver's status (2xx).
        webhook_id: The ``webhook-id`` sent: the same for every attempt of the step.
        body: The receiver's answer (parsed JSON or text, at most 16 KiB of it).
    """

    status_code: int
    webhook_id: str
    body: Any = None


AUTOESCAPED_INPUTS: Mapping[str, tuple[str, ...]] = MappingProxyType({"email": ("html",)})
"""Input fields rendered with HTML autoescaping, per action: data written into them by a template
is escaped (``<`` becomes ``&lt;``), so run data cannot add markup to an email."""

ACTION_OUTPUTS: Mapping[str, type[ActionInput]] = MappingProxyType(
    {
        "email": EmailResult,
        "sms": MessageResult,
        "call": MessageResult,
        "sms_status": MessageResult,
        "call_status": CallStatusResult,
        "webhook": WebhookResult,
    }
)
"""The output model of the actions that declare one (the step's ``output`` has its fields)."""


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
            JSON and validated (in a process of its own, within ``WFA_INPUT_CHECK_DEADLINE``:
            ``activities.input_check``); an invalid answer fails the attempt (``LlmAnswerInvalid``,
            retried by the step's policy). Held to ``input_schema``'s rules
            (:func:`interpreter.input_schema.schema_hazards`): at most 64 KiB, references only
            inside it (and to something), no ``pattern`` with a nested quantifier.
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
            from interpreter.input_schema import MAX_SCHEMA_BYTES, schema_hazards

            try:
                size = len(json.dumps(value, separators=(",", ":")))
                if size > MAX_SCHEMA_BYTES:
                    raise ValueError(
                        f"the schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed"
                    )
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as err:
                raise ValueError(f"not a valid JSON Schema: {err.message}") from None
            except RecursionError:
                raise ValueError("not a valid JSON Schema: nested too deeply") from None
            hazards = schema_hazards(value, pointers=True)
            if hazards:
                raise ValueError("; ".join(f"{problem.path}: {problem.message}" for problem in hazards[:5]))
        return value

    @model_validator(mode="after")
    def _has_a_message(self) -> LlmInput:
        if self.prompt is None and not self.messages:
            raise ValueError("give a prompt or messages")
        return self


ACTION_INPUTS: Mapping[str, type[ActionInput]] = MappingProxyType(
    {
        "http": HttpInput,
        "echo": EchoInput,
        "email": EmailInput,
        "sms": SmsInput,
        "call": CallInput,
        "sms_status": SmsStatusInput,
        "call_status": CallStatusInput,
        "webhook": WebhookInput,
        "sql": SqlInput,
        "llm": LlmInput,
    }
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
