"""The ``email`` action: one message through the tenant's SMTP server (``aiosmtplib``).

Configuration is the tenant's, from its scoped secrets (:mod:`activities.secrets`), never from a
definition; ``<account>`` is the step's ``account`` input (default ``SMTP``):

=====================  ========  ===========================================================
Setting                Needed    Meaning
=====================  ========  ===========================================================
``<account>_HOST``     yes       SMTP server host name or address
``<account>_PORT``     no        default 465 for ``tls``, 587 for ``starttls``, 25 for ``none``
``<account>_SECURITY`` no        ``starttls`` (default: upgrade or fail), ``tls`` (implicit
                                 TLS), ``none`` (plain text: local relays and tests only)
``<account>_USERNAME`` no        login name (with ``_PASSWORD``)
``<account>_PASSWORD`` no        a secret: redacted from outputs and errors; its ``hosts``
                                 restriction is checked against ``_HOST``
``<account>_FROM``     no        default sender when the step gives no ``from``
``<account>_HELO``     no        name given in EHLO (default: the sender's domain)
=====================  ========  ===========================================================

The connection goes through the worker's :class:`~activities.outbound.OutboundPolicy` like every
network-reaching action: the host is resolved once, every address checked, and the connection made
to a checked address (TLS still verifies the certificate against the host name).

The ``Message-ID`` is derived from the step's idempotency key (workflow id, run, step path and
visit): every attempt of a step sends the same one, so a message delivered again after a retry (a
worker killed after the server took the message, before it reported) is recognisable.

Classification (error ``type`` on the raised :class:`~temporalio.exceptions.ApplicationError`):

====================================  ==========  ==============================================
Situation                             Retryable   Type
====================================  ==========  ==============================================
input fails validation                no          ``InvalidActionInput``
attachments over the size limit       no          ``EmailAttachmentTooLarge``
setting ``<account>_HOST`` missing    no          ``ActionNotConfigured``
password secret not for this host     no          ``SecretHostRefused``
outbound policy refuses the host      no          ``OutboundRefused``
could not connect / connection lost   yes         ``EmailConnectError``
no answer in time                     yes         ``EmailTimeout``
server replied 4xx (any command)      yes         ``EmailTemporaryFailure``
server replied 5xx                    no          ``EmailRejected`` (the reply in the message)
every recipient refused with 5xx      no          ``EmailRecipientsRefused``
login refused (5xx)                   no          ``EmailAuthenticationFailed``
STARTTLS not offered, TLS failure     no          ``EmailTlsError``
====================================  ==========  ==============================================

Some recipients refused and others accepted is a success: the refused ones are in the output.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import html
import re
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from typing import Any

import aiosmtplib
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import (
    action,
    check_secret_hosts,
    invalid_input,
    require_setting,
    resolve_relayed,
    tenant_secret,
    tenant_setting,
)
from activities.outbound import OutboundPolicy, OutboundRefusedError, Resolver, numeric_host, system_resolver
from interpreter.actions import (
    LINE_BREAKS,
    ActionRequest,
    EmailInput,
    EmailResult,
    parse_action_input,
)

__all__ = [
    "MAX_ATTACHMENTS_BYTES",
    "EmailActions",
    "build_message",
    "html_to_text",
    "message_id_for",
]

MAX_ATTACHMENTS_BYTES = 1024 * 1024
"""Most bytes of attachments (decoded, all together) in one message: they travel in the step's
input through workflow history, whose payloads are capped at 2 MiB. Link to larger files."""

_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_SECURITY = tuple(_DEFAULT_PORTS)
_REPLY_LIMIT = 500


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The ``Message-ID`` of a step's message: the same for every attempt of that step execution.

    Args:
        idempotency_key: The step's idempotency key (workflow id, run id, step path and visit).
        domain: The right-hand side, usually the sender's domain.
    """
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<wfa.{digest}@{domain}>"


_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}
)
_HIDDEN = frozenset({"head", "title"})
"""Elements whose text is not shown (``script`` and ``style`` are skipped whole, raw text)."""
_TAG = re.compile(r"""<(/?)([a-zA-Z][^\s/>]*+)((?:[^>=]++|=\s*+(?:"[^"]*+"|'[^']*+')?)*+)>""")
"""A start or end tag, up to the ``>`` outside its quoted attribute values: a quote opens a value
only right after ``=``, as in a browser (elsewhere, ``align="center""``, ``alt=Bob's``, it is a
character). Possessive throughout, so a match, or a failed one, never gives back what it read:
time linear in it (with backtracking, a tag name of 40 KB that no ``>`` ended took 23 s: a
review)."""
_STARTS_TAG = re.compile(r"</?[a-zA-Z]")
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]++)(?:\s*+=\s*+("[^"]*+"|'[^']*+'|[^\s"'>]++))?""")
_LEADING_ZEROS = re.compile(r"&#0+(?=[0-9])")
_HUGE_DECIMAL = re.compile(r"&#[1-9][0-9]{7,}")


def _unescape(text: str) -> str:
    """``html.unescape``, without its ``ValueError`` on a decimal reference of thousands of digits
    (Python's limit on integer conversion): such a number, past the last code point, reads as
    U+FFFD, as unescape reads any number past it (a review)."""
    return html.unescape(_HUGE_DECIMAL.sub("&#1114112", _LEADING_ZEROS.sub("&#", text)))


_RAW_TEXT_END = {name: re.compile(rf"</{name}[\s/>]", re.IGNORECASE) for name in ("script", "style")}


def _href(attributes: str) -> str | None:
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == "href" and match.group(2) is not None:
            return _unescape(match.group(2).strip("\"'"))
    return None


def html_to_text(markup: str) -> str:
    """The plain-text part derived from an HTML body (for clients that show no HTML): blocks on
    their own lines, list items marked, links followed by their URL, comments, scripts, styles and
    the head left out.

    Read in one pass, each construct found by a search that starts where the last one ended and
    is never repeated: time linear in the body. Python's HTML parser, used before, scanned from
    each ``<`` that nothing closed to the end of the body: ``'<a ' * 20000`` (60 KB) took 41 s and
    ``'<!-- x>' * 80000`` 38 s, in the activity's event loop, holding every other activity of the
    worker (found by an attacker's probe and a review). As in HTML, a tag or comment that does
    not end ends the body.
    """
    parts: list[str] = []
    links: list[str | None] = []
    hidden = 0
    i, n = 0, len(markup)
    while i < n:
        lt = markup.find("<", i)
        if lt < 0:
            lt = n
        if lt > i and not hidden:
            parts.append(_unescape(markup[i:lt]))
        i = lt
        if i >= n:
            break
        if markup.startswith("<!--", i):
            end = markup.find("-->", i + 4)
            i = n if end < 0 else end + 3
            continue
        if _STARTS_TAG.match(markup, i) is None:
            if markup.startswith(("<!", "<?", "</"), i):  # a doctype, CDATA, instruction, "</ x>"
                end = markup.find(">", i + 2)
                i = n if end < 0 else end + 1
            else:  # a '<' that starts no tag is text
                if not hidden:
                    parts.append("<")
                i += 1
            continue
        tag = _TAG.match(markup, i)
        if tag is None:
            break  # a tag that does not end: the rest of the body is inside it
        i = tag.end()
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if not closing and name in _RAW_TEXT_END:
            end_tag = _RAW_TEXT_END[name].search(markup, i)
            if end_tag is None:
                break
            i = markup.find(">", end_tag.end() - 1)
            i = n if i < 0 else i + 1
            continue
        if name in _HIDDEN:
            hidden = max(hidden - 1, 0) if closing else hidden + 1
        elif name in _BLOCKS:
            parts.append("\n")
        if closing:
            if name == "a" and links:
                href = links.pop()
                if href and href.startswith(("http://", "https://", "mailto:")) and not hidden:
                    parts.append(f" ({href})")
            continue
        if name == "li" and not hidden:
            parts.append("- ")
        if name == "a":
            links.append(_href(tag.group(3)))
    lines = [" ".join(line.split()) for line in "".join(parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@dataclass(frozen=True)
class _Server:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    sender: str | None
    helo: str | None


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(f"invalid email input: {message}", type="InvalidActionInput", non_retryable=True)


def _server_config(account: str) -> _Server:
    host = require_setting(f"{account}_HOST", "email")
    security = (tenant_setting(f"{account}_SECURITY") or "starttls").strip().lower()
    if security not in _SECURITY:
        raise ApplicationError(
            f"setting {account}_SECURITY is {security[:40]!r}; use one of {', '.join(_SECURITY)}",
            type="ActionNotConfigured",
            non_retryable=True,
        )
    port_text = (tenant_setting(f"{account}_PORT") or "").strip()
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ApplicationError(
            f"setting {account}_PORT is not a port number", type="ActionNotConfigured", non_retryable=True
        )
    username = tenant_setting(f"{account}_USERNAME")
    password = tenant_secret(f"{account}_PASSWORD", required=False)
    if (username is None) != (password is None):
        raise ApplicationError(
            f"settings {account}_USERNAME and {account}_PASSWORD go together",
            type="ActionNotConfigured",
            non_retryable=True,
        )
    return _Server(
        host=host,
        port=int(port_text) if port_text else _DEFAULT_PORTS[security],
        security=security,
        username=username,
        password=password,
        sender=tenant_setting(f"{account}_FROM"),
        helo=tenant_setting(f"{account}_HELO"),
    )


def _attachment_bytes(spec: EmailInput) -> list[tuple[bytes | str, str, str]]:
    """``(content, content_type, filename)`` per attachment, within the size limit."""
    found: list[tuple[bytes | str, str, str]] = []
    total = 0
    for index, attachment in enumerate(spec.attachments):
        content: bytes | str
        if attachment.content_base64 is not None:
            try:
                content = base64.b64decode(attachment.content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise _invalid(f"attachments[{index}].content_base64: not base64") from None
            total += len(content)
        else:
            content = attachment.content_text or ""
            total += len(content.encode("utf-8"))
        if total > MAX_ATTACHMENTS_BYTES:
            raise ApplicationError(
                f"attachments are over {MAX_ATTACHMENTS_BYTES} bytes together (at attachments[{index}]"
                f" {attachment.filename!r}); link to large files instead",
                type="EmailAttachmentTooLarge",
                non_retryable=True,
            )
        found.append((content, attachment.content_type, attachment.filename))
    return found


def build_message(spec: EmailInput, sender: str, message_id: str) -> EmailMessage:
    """The MIME message: a text part always, the HTML alternative when given, then attachments.

    Bcc recipients are never written into a header (they are envelope recipients only).
    """
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(spec.to)
    if spec.cc:
        message["Cc"] = ", ".join(spec.cc)
    if spec.reply_to:
        message["Reply-To"] = spec.reply_to
    message["Subject"] = re.sub(r"[\r\n\t]+", " ", spec.subject).strip()
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a robot
    text = spec.text if spec.text is not None else html_to_text(spec.html or "")
    message.set_content(text, charset="utf-8")
    if spec.html is not None:
        message.add_alternative(spec.html, subtype="html", charset="utf-8")
    for content, content_type, filename in _attachment_bytes(spec):
        maintype, _, subtype = content_type.partition("/")
        if isinstance(content, str) and maintype == "text":
            message.add_attachment(content, subtype=subtype, filename=filename, charset="utf-8")
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}"[:_REPLY_LIMIT]


def _tls_failure(exc: BaseException) -> BaseException | None:
    """The TLS error behind ``exc`` (aiosmtplib wraps a failed handshake in a connect error), or
    ``exc`` itself when the server does not offer the STARTTLS the settings require."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return current
        current = current.__cause__ or current.__context__
    if type(exc) is aiosmtplib.SMTPException and "STARTTLS" in str(exc):
        return exc
    return None


def _classify(exc: Exception, where: str) -> ApplicationError:
    """An SMTP failure as a step failure: 4xx and lost connections retry, 5xx are permanent."""
    tls = _tls_failure(exc)
    if tls is not None:
        return ApplicationError(f"{where}: TLS failed: {tls}", type="EmailTlsError", non_retryable=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = {r.recipient: _reply(r.code, r.message) for r in exc.recipients}
        temporary = any(400 <= r.code < 500 for r in exc.recipients)
        summary = "; ".join(f"{rcpt}: {reply}" for rcpt, reply in replies.items())
        if temporary:
            return ApplicationError(
                f"{where} deferred every recipient: {summary}",
                {"refused": replies},
                type="EmailTemporaryFailure",
            )
        return ApplicationError(
            f"{where} refused every recipient: {summary}",
            {"refused": replies},
            type="EmailRecipientsRefused",
            non_retryable=True,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = _reply(exc.code, exc.message)
        details = {"code": exc.code, "reply": reply}
        if 400 <= exc.code < 500:
            return ApplicationError(
                f"{where} replied {reply} (temporary)", details, type="EmailTemporaryFailure"
            )
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return ApplicationError(
                f"{where} refused the login: {reply}",
                details,
                type="EmailAuthenticationFailed",
                non_retryable=True,
            )
        if exc.code >= 500:
            return ApplicationError(
                f"{where} rejected the message: {reply}", details, type="EmailRejected", non_retryable=True
            )
        return ApplicationError(f"{where} replied {reply}", details, type="EmailConnectError")
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        return ApplicationError(f"{where} did not answer in time", type="EmailTimeout")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return ApplicationError(f"{where}: {exc}", type="EmailTlsError", non_retryable=True)
    if isinstance(exc, ConnectionError | OSError | aiosmtplib.SMTPException):
        return ApplicationError(f"{where}: connection failed: {exc}", type="EmailConnectError")
    raise exc


class EmailActions:
    """The ``email`` activity; ``EmailActions(policy).email`` is what the worker registers.

    Args:
        policy: The worker's outbound policy (the same the ``http`` action's client uses).
        resolver: Resolves host names (default: the system's); tests inject one.
        tls_context: TLS settings for ``tls``/``starttls`` (default: verified, system CAs).
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver or system_resolver
        self._tls_context = tls_context

    async def _connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A connected socket to an address of ``host`` the policy allows (resolved once)."""
        literal = numeric_host(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise ConnectionError(f"cannot resolve {host!r}: {exc}") from None
        refusal: OutboundRefusedError | None = None
        last: Exception | None = None
        loop = asyncio.get_running_loop()
        for address in addresses:
            try:
                self._policy.check(host, address)
            except OutboundRefusedError as exc:
                refusal = refusal or exc
                continue
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, (address, port))
            except (OSError, TimeoutError) as exc:
                sock.close()
                last = exc
                continue
            return sock
        if last is not None:
            raise ConnectionError(f"cannot connect to {host}:{port}: {last}")
        if refusal is not None:
            raise refusal
        raise ConnectionError(f"cannot resolve {host!r}: no address")

    @action("email")
    async def email(self, request: ActionRequest) -> dict[str, Any]:
        """Send one email described by ``request.input`` (an :class:`EmailInput`).

        Returns:
            An :class:`EmailResult` as a dict: ``message_id``, ``accepted``, ``refused``.

        Raises:
            ApplicationError: Classified as in the module docstring.
        """
        try:
            # ``${secret:NAME}`` in the definition's own text is resolved, but not one that names
            # hosts: the message goes on to its recipients. Data's escaped ``$${secret:`` becomes
            # the literal text.
            spec = parse_action_input(EmailInput, resolve_relayed(request.input, "an email"))
        except ValidationError as exc:
            raise invalid_input("email", request.input, exc) from None
        server = _server_config(spec.account)
        sender = spec.from_ or server.sender
        if not sender:
            raise _invalid(f"from: no sender given and the tenant has no setting {spec.account}_FROM")
        sender_address = parseaddr(sender)[1]
        if (
            "@" not in sender_address
            or not LINE_BREAKS.isdisjoint(sender)
            or not sender_address.isascii()  # the tenant's setting is checked as input is
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in sender)
        ):
            raise _invalid("from: the sender is not an ASCII email address on one line")
        domain = sender_address.rpartition("@")[2].strip().lower() or "localhost"
        message_id = message_id_for(request.idempotency_key, domain)
        try:
            message = build_message(spec, sender, message_id)
        except ValueError as exc:  # a header the stdlib refuses; the input model refuses them first
            raise _invalid(f"a header cannot be written: {exc}") from None
        recipients = [parseaddr(a)[1] for a in (*spec.to, *spec.cc, *spec.bcc)]
        recipients = list(dict.fromkeys(recipients))  # one delivery per address
        check_secret_hosts(server.host)
        where = f"SMTP server {server.host}:{server.port}"
        try:
            async with asyncio.timeout(spec.timeout_s):
                sock = await self._connect(server.host, server.port, spec.timeout_s)
                smtp = aiosmtplib.SMTP(
                    hostname=server.host,
                    sock=sock,
                    use_tls=server.security == "tls",
                    start_tls=server.security == "starttls",
                    username=server.username,
                    password=server.password,
                    local_hostname=server.helo or domain,
                    tls_context=self._tls_context,
                    timeout=spec.timeout_s,
                )
                try:
                    await smtp.connect()
                    refused, _ = await smtp.sendmail(sender_address, recipients, message.as_bytes())
                finally:
                    if smtp.is_connected:
                        try:
                            await smtp.quit()
                        except (aiosmtplib.SMTPException, OSError):
                            smtp.close()
                    sock.close()
        except OutboundRefusedError as exc:
            raise exc.application_error(where) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            raise _classify(exc, where) from exc
        refused_replies = {rcpt: _reply(reply.code, reply.message) for rcpt, reply in refused.items()}
        return EmailResult(
            message_id=message_id,
            accepted=[r for r in recipients if r not in refused_replies],
            refused=refused_replies,
        ).model_dump(by_alias=True)
