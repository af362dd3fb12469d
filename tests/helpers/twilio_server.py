"""A loopback server that speaks the part of Twilio's REST API the ``sms``, ``call`` and
``sms_status`` and ``call_status`` actions use (API 2010-04-01), on a :class:`RecordingServer` that records every request.

Behaviour (as Twilio's, in shape): basic auth ``AccountSid:AuthToken`` checked (401, code 20003);
``To`` checked for E.164 (400, code 21211); a message is created ``queued`` with a ``SM...`` sid and
reads back as ``delivered``; a call is created ``queued`` with a ``CA...`` sid and reads back as
``completed`` with a ``duration`` of ``"42"`` (seconds, a string as Twilio sends it); an unknown sid
is 404 (code 20404). ``fail_next`` serves scripted
failures (429, 503, ...) before the normal answer.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from typing import Any
from urllib.parse import parse_qs

from tests.helpers.http_server import RecordedRequest, RecordingServer, Response

__all__ = ["ACCOUNT_SID", "AUTH_TOKEN", "FakeTwilio"]

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-auth-token-7d1f9c2e"


def form(request: RecordedRequest) -> dict[str, str]:
    """The request's form fields (one value each)."""
    return {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}


class FakeTwilio:
    """Messages and calls of one account on ``server``; ``url`` is the base URL to configure."""

    def __init__(
        self, server: RecordingServer, account_sid: str = ACCOUNT_SID, token: str = AUTH_TOKEN
    ) -> None:
        self.server = server
        self.account_sid = account_sid
        self.token = token
        self.messages: dict[str, dict[str, Any]] = {}
        self.fail_next: list[Response] = []
        self._lock = threading.Lock()
        base = f"/2010-04-01/Accounts/{account_sid}"
        server.route("POST", f"{base}/Messages.json", self._create("SM", ("To", "From", "Body")))
        server.route("POST", f"{base}/Calls.json", self._create("CA", ("To", "From")))
        self._base = base

    @property
    def url(self) -> str:
        return self.server.url

    def _authorised(self, request: RecordedRequest) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def _scripted(self) -> Response | None:
        with self._lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def _create(self, prefix: str, required: tuple[str, ...]) -> Any:
        def respond(request: RecordedRequest) -> Response:
            scripted = self._scripted()
            if scripted is not None:
                return scripted
            if not self._authorised(request):
                return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
            fields = form(request)
            missing = [name for name in required if not fields.get(name)]
            if missing:
                return 400, {}, {"code": 21604, "message": f"A '{missing[0]}' is required.", "status": 400}
            if not re.fullmatch(r"\+[1-9][0-9]{6,14}", fields["To"]) or fields["To"].startswith(
                "+1500555000"
            ):
                return (
                    400,
                    {},
                    {
                        "code": 21211,
                        "message": f"The 'To' number {fields['To']} is not a valid phone number.",
                        "more_info": "https://www.twilio.com/docs/errors/21211",
                        "status": 400,
                    },
                )
            key = request.headers.get("i-twilio-idempotency-token", "")
            sid = prefix + hashlib.sha256(f"{key}/{len(self.messages)}".encode()).hexdigest()[:32]
            record = {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": fields["To"],
                "from": fields["From"],
                "body": fields.get("Body"),
                "status": "queued",
                "error_code": None,
                "error_message": None,
            }
            with self._lock:
                self.messages[sid] = record
            if prefix == "SM":
                self.server.route("GET", f"{self._base}/Messages/{sid}.json", self._read(sid, "delivered"))
            else:
                ended = {"duration": "42", "answered_by": "human"}
                self.server.route(
                    "GET", f"{self._base}/Calls/{sid}.json", self._read(sid, "completed", ended)
                )
            return 201, {}, record

        return respond

    def _read(self, sid: str, status: str, extra: dict[str, Any] | None = None) -> Any:
        def respond(request: RecordedRequest) -> Response:
            if not self._authorised(request):
                return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
            return 200, {}, {**self.messages[sid], **(extra or {}), "status": status}

        return respond
