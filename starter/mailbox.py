"""A local SMTP server that keeps what it receives: the demo's mailbox, and the tests' SMTP server.

It is ``aiosmtpd`` (a dev dependency) serving on ``127.0.0.1`` in the running event loop. Replies
can be scripted (``451`` to make a sender retry, ``554`` to refuse), recipients refused, a login
required, and a delivery held before its reply (to kill a sender mid-send).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Self, cast

__all__ = ["LocalMailbox", "ReceivedMail"]


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server received it.

    Attributes:
        mail_from: Envelope sender.
        rcpt_tos: Envelope recipients (bcc included).
        raw: The message as sent.
        message: It parsed (``email.policy.default``).
        login: The user name the sender logged in as, if it did.
    """

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None = None

    @property
    def message_id(self) -> str:
        """The ``Message-ID`` header."""
        return str(self.message["Message-ID"])

    def part(self, content_type: str) -> str:
        """The body part of that type (``text/plain``, ``text/html``), decoded, with ``\\n`` line ends."""
        for part in self.message.walk():
            if part.get_content_type() == content_type and part.get_content_disposition() != "attachment":
                return str(part.get_content()).replace("\r\n", "\n")
        raise KeyError(content_type)

    def attachments(self) -> list[tuple[str, str, bytes]]:
        """``(filename, content type, content)`` of each attachment."""
        found = []
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            found.append((str(part.get_filename()), part.get_content_type(), cast(bytes, payload)))
        return found


@dataclass
class _Handler:
    owner: LocalMailbox

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.owner.refuse.get(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        login = session.auth_data.login.decode() if getattr(session, "auth_data", None) is not None else None
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=email.message_from_bytes(raw, policy=email.policy.default),
            login=login,
        )
        self.owner.received.append(mail)
        self.owner.arrived.set()
        if self.owner.hold_next > 0:
            self.owner.hold_next -= 1
            await self.owner.release.wait()
        if self.owner.data_replies:
            return self.owner.data_replies.pop(0)
        return "250 2.0.0 OK: queued"


@dataclass
class LocalMailbox:
    """An SMTP server on ``127.0.0.1``; start it with ``await mailbox.start()``, stop with ``stop()``.

    Attributes:
        received: Every message whose data arrived, in order (also those then refused by a
            scripted reply: the server had the message).
        data_replies: Replies to the next DATA commands, in order (``"451 4.3.0 try later"``);
            then ``250``.
        refuse: Replies to RCPT for these addresses (``{"x@y": "550 5.1.1 no such user"}``).
        hold_next: Hold the reply to this many next messages until :attr:`release` is set.
        credentials: When set, a login is required and must match ``(user, password)``.
    """

    received: list[ReceivedMail] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    hold_next: int = 0
    credentials: tuple[str, str] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> Self:
        """Listens on ``127.0.0.1:port`` (0: any free port) in the running loop."""
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword  # dev dependency: imported on use

        loop = asyncio.get_running_loop()
        handler = _Handler(self)

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            wanted = self.credentials
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == wanted
            # handled=False: aiosmtpd answers a refusal with 535 itself.
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

        def protocol() -> SMTP:
            wanted = self.credentials  # read per connection: a test may require a login after start
            return SMTP(
                handler,
                hostname="localhost",
                loop=loop,
                authenticator=authenticate if wanted else None,
                auth_required=wanted is not None,
                auth_require_tls=False,  # loopback only
            )

        self._server = await loop.create_server(protocol, "127.0.0.1", port)
        return self

    async def stop(self) -> None:
        """Stops listening (a held delivery is released first)."""
        self.release.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
