"""The ``email`` action against a real SMTP server (aiosmtpd, in-process): what it received, how
failures are classified, and end-to-end runs on the Temporal dev server (autoescaping, retries)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.email import MAX_ATTACHMENTS_BYTES, EmailActions, html_to_text, message_id_for
from activities.outbound import OutboundPolicy
from activities.secrets import Secret, configure_secret_store
from interpreter.actions import ActionRequest, ActionResult
from interpreter.state import RunState, StepStatus
from starter.mailbox import LocalMailbox
from tests.workflows.support import definition, failure_of, record, start, unique
from worker import build_worker

KEY = "intervention-F17/run-1/send_email"
PASSWORD = "pw-S3cret-smtp-9f2"


@pytest_asyncio.fixture
async def mailbox() -> AsyncIterator[LocalMailbox]:
    async with LocalMailbox() as box:
        yield box


def settings(mailbox: LocalMailbox, **extra: str | Secret) -> dict[str, str | Secret]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mailbox.port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "Outreach <outreach@school.example>",
        **extra,
    }


@pytest.fixture
def tenant_settings() -> Iterator[dict[str, dict[str, str | Secret]]]:
    """The tenants' settings the actions read (filled in by each test), as a secrets store."""
    tenants: dict[str, dict[str, str | Secret]] = {}

    class _Store:
        def get(self, tenant: str, name: str) -> Secret | None:
            value = tenants.get(tenant, {}).get(name)
            return Secret(value) if isinstance(value, str) else value

    configure_secret_store(_Store())
    yield tenants
    configure_secret_store(None)


async def send(
    data: dict[str, Any], *, policy: OutboundPolicy | None = None, key: str = KEY, tenant: str = "default"
) -> ActionResult:
    request = ActionRequest(step_id="send_email", idempotency_key=key, input=data, tenant=tenant)
    return await ActivityEnvironment().run(EmailActions(policy or OutboundPolicy.loopback()).email, request)


async def send_error(data: dict[str, Any], **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await send(data, **kwargs)
    return info.value


MESSAGE = {
    "to": ["Martinez family <martinez@example.org>"],
    "cc": ["coordinator@school.example"],
    "bcc": ["audit@school.example"],
    "reply_to": "coordinator@school.example",
    "subject": "How are things going?\r\nBcc: injected@evil.example",
    "text": "Hello Martinez family,\nHow are things?",
    "html": "<p>Hello <b>Martinez family</b>,</p><p>How are things?</p>",
    "attachments": [
        {"filename": "plan.csv", "content_type": "text/csv", "content_text": "week,goal\n1,attend\n"},
        {
            "filename": "logo.png",
            "content_type": "image/png",
            "content_base64": base64.b64encode(b"\x89PNG\r\n\x1a\nbinary").decode(),
        },
    ],
}


# ------------------------------------------------------------------------------ what is received


async def test_the_server_receives_headers_both_parts_and_attachments(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    result = await send(MESSAGE)

    (mail,) = mailbox.received
    expected_id = message_id_for(KEY, "school.example")
    assert result.output == {
        "message_id": expected_id,
        "accepted": ["martinez@example.org", "coordinator@school.example", "audit@school.example"],
        "refused": {},
    }
    assert mail.mail_from == "outreach@school.example"
    assert mail.rcpt_tos == ["martinez@example.org", "coordinator@school.example", "audit@school.example"]
    headers = mail.message
    assert headers["Message-ID"] == expected_id
    assert headers["From"] == "Outreach <outreach@school.example>"
    assert headers["To"] == "Martinez family <martinez@example.org>"
    assert headers["Cc"] == "coordinator@school.example"
    assert headers["Reply-To"] == "coordinator@school.example"
    assert headers["Bcc"] is None, "bcc recipients are never in a header"
    assert b"audit@school.example" not in mail.raw
    # A line break in the subject cannot start another header.
    assert headers["Subject"] == "How are things going? Bcc: injected@evil.example"
    assert "injected@evil.example" not in str(headers.get_all("Bcc"))
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers["Date"]
    assert mail.part("text/plain") == "Hello Martinez family,\nHow are things?\n"
    assert mail.part("text/html").strip() == MESSAGE["html"]
    assert mail.attachments() == [
        ("plan.csv", "text/csv", b"week,goal\r\n1,attend\r\n"),  # text travels with CRLF
        ("logo.png", "image/png", b"\x89PNG\r\n\x1a\nbinary"),
    ]


async def test_html_only_gets_a_derived_text_part(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    html = (
        "<html><head><style>p{color:red}</style></head><body><h1>Check-in</h1><p>Hello &amp; welcome,"
        ' <a href="https://school.example/reply">reply here</a>.</p><ul><li>one</li><li>two</li></ul></body></html>'
    )
    await send({"to": "dana@acme.test", "subject": "Hi", "html": html})
    (mail,) = mailbox.received
    assert mail.part("text/plain") == (
        "Check-in\n\nHello & welcome, reply here (https://school.example/reply).\n\n- one\n\n- two\n"
    )
    assert mail.part("text/html").strip() == html
    assert html_to_text("<script>alert(1)</script>ok") == "ok\n"


async def test_html_of_unclosed_tags_gets_its_text_part_in_linear_time(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    """A probe: ``'<a ' * 20000`` (60 KB of html, no text) took 41 s to turn into the text part, in
    the activity's event loop, holding every other activity of the worker (120 KB: 158 s): Python's
    HTML parser scanned from each ``<`` that nothing closed to the end of the body; a review found
    the same of ``'<!-- x>' * 80000`` (38 s). The deadline is for a hang, not a speed: it takes well
    under a second."""
    tenant_settings["default"] = settings(mailbox)
    html = '<p>Hello</p><a href="https://school.example/r">reply</a>' + "<a " * 40_000
    await asyncio.wait_for(send({"to": "dana@acme.test", "subject": "Hi", "html": html}), 60)
    (mail,) = mailbox.received
    # As in HTML, a tag that does not end ends the body.
    assert mail.part("text/plain") == "Hello\nreply (https://school.example/r)\n"
    hostile_inputs = (
        "<!-- x>" * 80_000,
        "<![CDATA[ >" * 80_000,
        "<a x='" * 100_000,
        "</ " * 100_000,
        "<a" + "b" * 500_000,  # a review: a name that no '>' ended took 23 s at 40 KB
        "<a" + '"' * 500_000,
    )
    for hostile in hostile_inputs:
        text = await asyncio.wait_for(asyncio.to_thread(html_to_text, "<p>Hi</p>" + hostile), 60)
        assert text.startswith("Hi\n"), hostile[:20]


def test_the_derived_text_part_reads_html_as_a_browser_does() -> None:
    """What a review found the first fix (escaping each unclosed ``<``) showed wrongly: tags in a
    comment, ``<`` in an attribute's value."""
    assert html_to_text('<!-- <div class="x">\n<p>unused</p>\n</div> --><p>Hello</p>') == "Hello\n"
    assert html_to_text('<a title="a<b" href="https://x">link</a>') == "link (https://x)\n"
    assert html_to_text('<img alt="<logo>">Hi') == "Hi\n"
    mso = "<!--[if mso]><table><tr><td><![endif]--><p>Body</p><!--[if mso]></td></tr></table><![endif]-->"
    assert html_to_text(mso) == "Body\n"
    assert html_to_text('<p>a</p><script>if (a<b) {x="</p>"}</script><p>b</p>') == "a\n\nb\n"
    assert html_to_text("a < b, <b>bold</b> <br>x &lt;y&gt; &eacute;") == "a < b, bold\nx <y> \u00e9\n"
    assert html_to_text("<![ >x") == "x\n"  # Python's parser raised AssertionError here
    # Quotes a browser reads as characters (a second review: the text part came out empty).
    shipped = '<td align="center"" valign="top">Your order has shipped.</td><p>Questions?</p>'
    assert html_to_text(shipped) == "Your order has shipped.\nQuestions?\n"
    assert html_to_text("<p><img src=logo.png alt=Bob's>Hi Bob,</p><p>Regards</p>") == "Hi Bob,\n\nRegards\n"
    # A decimal reference of thousands of digits (html.unescape raised ValueError on every retry).
    assert html_to_text("&#" + "1" * 5000 + "; &#0065;") == "\ufffd A\n"


async def test_the_message_id_is_the_same_for_every_attempt_and_differs_per_step(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    data = {"to": "a@b.example", "subject": "s", "text": "t"}
    first = await send(data)
    again = await send(data)  # a retry of the same step execution
    other = await send(data, key=KEY + "#2")  # the same step visited again
    assert first.output["message_id"] == again.output["message_id"] != other.output["message_id"]
    assert [m.message_id for m in mailbox.received] == [
        first.output["message_id"],
        first.output["message_id"],
        other.output["message_id"],
    ]


async def test_partly_refused_recipients_are_in_the_output(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    mailbox.refuse["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"
    result = await send({"to": ["here@example.org", "gone@example.org"], "subject": "s", "text": "t"})
    assert result.output["accepted"] == ["here@example.org"]
    assert result.output["refused"] == {"gone@example.org": "550 5.1.1 <gone@example.org>: no such user"}
    assert mailbox.received[0].rcpt_tos == ["here@example.org"]


async def test_login_with_the_tenants_credentials_never_shows_the_password(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    mailbox.credentials = ("mailer", PASSWORD)
    tenant_settings["default"] = settings(
        mailbox, SMTP_USERNAME="mailer", SMTP_PASSWORD=Secret(PASSWORD, ("127.0.0.1",))
    )
    result = await send({"to": "a@b.example", "subject": "s", "text": "t"})
    assert mailbox.received[0].login == "mailer"
    assert PASSWORD not in str(result.output)

    tenant_settings["default"]["SMTP_PASSWORD"] = Secret("wrong-" + PASSWORD)
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"})
    assert error.type == "EmailAuthenticationFailed"
    assert error.non_retryable
    assert "535" in error.message
    assert PASSWORD not in error.message
    assert PASSWORD not in str(error.details)

    # The password may go only to the hosts its secret names.
    tenant_settings["default"]["SMTP_PASSWORD"] = Secret(PASSWORD, ("smtp.provider.example",))
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"})
    assert error.type == "SecretHostRefused"
    assert len(mailbox.received) == 1


# ------------------------------------------------------------------------------------- failures


async def test_a_4xx_reply_is_retryable_and_a_5xx_reply_is_permanent_with_the_reply(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    data = {"to": "a@b.example", "subject": "s", "text": "t"}
    mailbox.data_replies[:] = ["451 4.3.0 Mail server temporarily rejected message"]
    error = await send_error(data)
    assert error.type == "EmailTemporaryFailure"
    assert not error.non_retryable
    assert "451 4.3.0 Mail server temporarily rejected message" in error.message

    mailbox.data_replies[:] = ["554 5.7.1 Message rejected as spam"]
    error = await send_error(data)
    assert error.type == "EmailRejected"
    assert error.non_retryable
    assert "554 5.7.1 Message rejected as spam" in error.message


async def test_every_recipient_refused(mailbox: LocalMailbox, tenant_settings: dict[str, Any]) -> None:
    tenant_settings["default"] = settings(mailbox)
    mailbox.refuse["gone@example.org"] = "550 5.1.1 no such user"
    error = await send_error({"to": "gone@example.org", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("EmailRecipientsRefused", True)
    assert "gone@example.org: 550 5.1.1 no such user" in error.message
    mailbox.refuse["full@example.org"] = "452 4.2.2 mailbox full"
    error = await send_error({"to": "full@example.org", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("EmailTemporaryFailure", False)


async def test_the_outbound_policy_is_checked_before_connecting(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"}, policy=OutboundPolicy())
    assert (error.type, error.non_retryable) == ("OutboundRefused", True)
    assert "loopback" in error.message
    # A host name resolving to a denied address is refused too (resolved once, then checked).
    tenant_settings["default"]["SMTP_HOST"] = "localhost"
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"}, policy=OutboundPolicy())
    assert error.type == "OutboundRefused"
    assert mailbox.received == []


async def test_connection_failures_are_retryable(tenant_settings: dict[str, Any]) -> None:
    async with LocalMailbox() as closed:
        port = closed.port
    tenant_settings["default"] = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}
    error = await send_error({"to": "a@b.example", "from": "x@y.example", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("EmailConnectError", False)


async def test_configuration_and_input_problems_are_permanent(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    data = {"to": "a@b.example", "subject": "s", "text": "t"}
    error = await send_error(data, tenant="acme")
    assert (error.type, error.non_retryable) == ("ActionNotConfigured", True)
    assert "SMTP_HOST of tenant 'acme'" in error.message

    tenant_settings["default"] = settings(mailbox, SMTP_SECURITY="ssl3")
    assert (await send_error(data)).type == "ActionNotConfigured"

    tenant_settings["default"] = settings(mailbox)
    error = await send_error({"to": "not-an-address", "subject": "s"})
    assert error.type == "InvalidActionInput"
    assert "to[0]" in error.message
    big = base64.b64encode(b"x" * (MAX_ATTACHMENTS_BYTES + 1)).decode()
    error = await send_error(
        {**data, "attachments": [{"filename": "big.bin", "content_base64": big}]},
    )
    assert (error.type, error.non_retryable) == ("EmailAttachmentTooLarge", True)
    error = await send_error({**data, "attachments": [{"filename": "x.bin", "content_base64": "%%%"}]})
    assert error.type == "InvalidActionInput"
    assert mailbox.received == []


SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
"""Line separators besides CR and LF that the stdlib's email headers refuse (``str.splitlines``)."""


@pytest.mark.parametrize("separator", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("subject", "Hi{sep}Bcc: injected@evil.example", "subject"),
        ("to", "Ann{sep}Bcc: injected@evil.example <ann@b.example>", "to[0]"),
        ("cc", ["ok@b.example", "Ann{sep}Bcc: injected@evil.example <ann@b.example>"], "cc[1]"),
        ("reply_to", "Ann{sep}Bcc: injected@evil.example <ann@b.example>", "reply_to"),
        ("from", "Ann{sep}Bcc: injected@evil.example <ann@b.example>", "from"),
    ],
)
async def test_an_exotic_line_separator_is_a_permanent_input_error_naming_the_field(
    mailbox: LocalMailbox,
    tenant_settings: dict[str, Any],
    separator: str,
    field: str,
    value: str | list[str],
    named: str,
) -> None:
    # Not a retryable ValueError from the stdlib at send time (3 attempts, then failure), and never a
    # header of its own.
    tenant_settings["default"] = settings(mailbox)
    filled = (
        [v.format(sep=separator) for v in value] if isinstance(value, list) else value.format(sep=separator)
    )
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t", field: filled})
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert error.message.startswith(f"invalid email input: {named}: "), error.message
    assert mailbox.received == []


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("from", "a@b\u00fc.example", "from"),
        ("to", "\u00fc@example.org", "to[0]"),
        ("from", "a@b\x01.example", "from"),
        ("to", "u\x01@b.example", "to[0]"),
        ("cc", ["ok@b.example", "Ann \x07 <ann@b.example>"], "cc[1]"),
    ],
)
async def test_an_address_smtp_cannot_carry_is_a_permanent_input_error(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any], field: str, value: Any, named: str
) -> None:
    """A probe: non-ASCII and control characters passed the check, then failed at send time with
    an unnamed UnicodeEncodeError or ValueError, retried."""
    tenant_settings["default"] = settings(mailbox)
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t", field: value})
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert error.message.startswith(f"invalid email input: {named}: "), error.message
    # A name in any script is fine: the header encodes it.
    await send({"to": "J\u00fcrgen M\u00fcller <jm@b.example>", "subject": "s", "text": "t"})
    (mail,) = mailbox.received
    assert mail.rcpt_tos == ["jm@b.example"]
    tenant_settings["default"] = settings(mailbox, SMTP_FROM="o@sch\u00fcle.example")
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert "from: the sender is not an ASCII email address" in error.message


async def test_a_tenant_sender_with_a_line_separator_is_refused_before_sending(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(
        mailbox, SMTP_FROM="Outreach\u2028Bcc: x@evil.example <o@school.example>"
    )
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert error.message.startswith("invalid email input: from: ")
    assert mailbox.received == []


async def test_an_attachment_name_with_a_line_separator_is_refused(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox)
    attachment = {"filename": "a\x0cb.txt", "content_text": "x"}
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t", "attachments": [attachment]})
    assert (error.type, error.non_retryable) == ("InvalidActionInput", True)
    assert "attachments[0].filename: " in error.message
    assert mailbox.received == []


# --------------------------------------------------------------------- end to end (dev server)


@pytest_asyncio.fixture
async def email_worker(client: Client, task_queue: str) -> AsyncIterator[None]:
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(
            client,
            task_queue,
            http_client,
            outbound_policy=OutboundPolicy.loopback(),
            graceful_shutdown_timeout=timedelta(0),
        ),
    ):
        yield


EMAIL_STEP = {
    "id": "send_email",
    "type": "task",
    "action": "email",
    "input": {
        "to": "{{ input.family.email }}",
        "subject": "Checking in with {{ input.family.name }}",
        "html": "<p>Hello {{ input.family.name }},</p><p>{{ input.note }}</p>",
    },
    "retry": {"preset": "constant", "initial_interval": "100ms", "maximum_attempts": 3},
}


async def test_a_run_escapes_hostile_data_in_html_and_retries_a_4xx(
    client: Client,
    task_queue: str,
    email_worker: None,
    mailbox: LocalMailbox,
    tenant_settings: dict[str, Any],
) -> None:
    tenant_settings["default"] = settings(mailbox)
    mailbox.data_replies[:] = ["421 4.7.0 Try again later"]
    hostile = '<script>alert("x")</script><img src=x onerror=steal()>'
    handle = await start(
        client,
        task_queue,
        definition(unique("email"), [EMAIL_STEP]),
        {"family": {"email": "martinez@example.org", "name": "Martinez & Sons"}, "note": hostile},
    )
    result = await handle.result()

    assert result.state == RunState.COMPLETED, result
    step = record(result, "send_email")
    assert step.attempts == 2
    first, second = mailbox.received
    assert first.message_id == second.message_id == step.output["message_id"]
    html = second.part("text/html")
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=steal()&gt;" in html
    assert "<p>Hello Martinez &amp; Sons,</p>" in html
    # The text part shows the data as the text it is.
    assert hostile in second.part("text/plain")
    assert second.message["Subject"] == "Checking in with Martinez & Sons"


async def test_a_run_fails_the_step_on_a_5xx_with_the_servers_reply(
    client: Client,
    task_queue: str,
    email_worker: None,
    mailbox: LocalMailbox,
    tenant_settings: dict[str, Any],
) -> None:
    tenant_settings["default"] = settings(mailbox)
    mailbox.data_replies[:] = ["550 5.7.1 Relaying denied"]
    handle = await start(
        client,
        task_queue,
        definition(unique("email"), [EMAIL_STEP]),
        {"family": {"email": "martinez@example.org", "name": "M"}, "note": "n"},
    )
    cause, result = await failure_of(handle)
    assert result is not None, cause
    assert result.state == RunState.FAILED
    step = record(result, "send_email")
    assert step.status == StepStatus.FAILED
    assert step.error_type == "EmailRejected"
    assert step.attempts == 1
    assert "550 5.7.1 Relaying denied" in (step.error or "")
    assert len(mailbox.received) == 1


# ------------------------------------------------------------------------------------------- TLS


def _certificate(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 and localhost: the server's context and a client
    context that trusts it (as a worker would trust its mail server's CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_starttls_and_implicit_tls_verify_the_servers_certificate(
    security: str, tenant_settings: dict[str, Any], tmp_path: Path
) -> None:
    server_context, client_context = _certificate(tmp_path)
    data = {"to": "a@b.example", "subject": "s", "text": "t"}
    async with LocalMailbox(security=security, ssl_context=server_context) as box:
        tenant_settings["default"] = settings(box, SMTP_SECURITY=security)
        request = ActionRequest(step_id="send_email", idempotency_key=KEY, input=data)
        actions = EmailActions(OutboundPolicy.loopback(), tls_context=client_context)
        await ActivityEnvironment().run(actions.email, request)
        (mail,) = box.received
        assert mail.tls

        # A certificate the worker does not trust: refused, permanently.
        error = await send_error(data)
        assert (error.type, error.non_retryable) == ("EmailTlsError", True)
        assert len(box.received) == 1


async def test_starttls_required_but_not_offered_is_refused(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox, SMTP_SECURITY="starttls")
    error = await send_error({"to": "a@b.example", "subject": "s", "text": "t"})
    assert (error.type, error.non_retryable) == ("EmailTlsError", True)
    assert "STARTTLS" in error.message
    assert mailbox.received == []


async def test_data_stays_inert_and_definition_secrets_resolve(
    mailbox: LocalMailbox, tenant_settings: dict[str, Any]
) -> None:
    tenant_settings["default"] = settings(mailbox, CODE=Secret("s3cr3t-code-4411"))
    # What data becomes when it enters a run (escaped), next to a reference the author wrote.
    data = {"to": "a@b.example", "subject": "s", "text": "data: $${secret:CODE} / author: ${secret:CODE}"}
    result = await send(data)
    (mail,) = mailbox.received
    assert mail.part("text/plain") == "data: ${secret:CODE} / author: s3cr3t-code-4411\n"
    assert "s3cr3t-code-4411" not in str(result.output)

    # A secret that names the hosts it may go to is never mailed, even one that names the SMTP
    # server: the message goes on to its recipients (an attacker's probe mailed the SMTP password
    # and a CRM token, both allowed to the SMTP host, to any address).
    for hosts in (("smtp.elsewhere.example",), ("127.0.0.1",)):
        tenant_settings["default"]["CODE"] = Secret("s3cr3t-code-4411", hosts)
        for field, value in (("text", "${secret:CODE}"), ("to", "${secret:CODE}@evil.example")):
            error = await send_error({**data, field: value})
            assert (error.type, error.non_retryable) == ("SecretHostRefused", True)
            assert "secret 'CODE' may be sent only to" in error.message
            assert "s3cr3t-code-4411" not in error.message
    tenant_settings["default"]["SMTP_PASSWORD"] = Secret(PASSWORD, ("127.0.0.1",))
    error = await send_error({**data, "text": "pw=${secret:SMTP_PASSWORD}"})
    assert error.type == "SecretHostRefused"
    assert len(mailbox.received) == 1  # only the first message


async def test_a_server_that_does_not_answer_is_a_retryable_timeout(tenant_settings: dict[str, Any]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; waits for the client to hang up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        tenant_settings["default"] = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_SECURITY": "none",
        }
        error = await send_error(
            {"to": "a@b.example", "from": "x@y.example", "subject": "s", "text": "t", "timeout_s": 1}
        )
    finally:
        server.close()
    assert (error.type, error.non_retryable) == ("EmailTimeout", False)
