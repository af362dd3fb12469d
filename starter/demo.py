"""``python -m starter.demo`` (``make demo``): every example definition, end to end, on a local server.

It starts the Temporal dev server (state in ``.state/``, so the runs stay browsable after a
restart), opens the store (``open_database``: ``$DATABASE_URL``'s PostgreSQL, else the embedded
server with its data in ``.state/postgres``), a small local HTTP endpoint that plays the
notification, CRM, inventory, payment, shipping and sentiment services and a Twilio-shaped SMS
provider, a local SMTP server (aiosmtpd) as the tenant's mail server, and a worker in this process
that also serves the dead-letter activities. Then, as tenant ``demo``, it:

* registers every example from ``examples/`` in the definition registry (idempotent: a second demo
  registers nothing new) and prints the registry;
* starts the example runs by name, so each is pinned to the registered version (its search
  attributes carry name, version and content hash), with short delays (``wait: 2s``
  instead of days, office hours off);
* registers a changed copy of ``expense-approval`` as the next version, shows the diff, activates
  it and rolls back, while the v1 run waits for its approval;
* registers a variant of ``order-fulfilment`` whose payment step has ``on_failure: dead_letter``
  and starts it pinned with a card the fake payment service declines: the run parks, its dead
  letter row is printed, then redriven with another card, and the run completes;
* approves the runs that wait for a person through the client API, with decision proof on: the
  runs require a signed token (a local signing key in ``.state/decision-keys``, which the in-process
  worker verifies with); mallory's forged token and an unlisted actor are refused first, then the
  manager's minted token is accepted; it prints how each run ended, its pinned version and its
  Web UI link;
* prints the emails the local SMTP server received (the intervention's ``email`` step) and the text
  messages the fake provider received (its ``sms`` step);
* starts one more expense run (without proof, so the printed commands need no token) and leaves it
  waiting for its manager, printing the ``wfa`` commands
  (with a path to ``wfa`` that works from a new shell in this folder) to see it, approve it and
  watch it finish;
* serves the approvals inbox on ``127.0.0.1:8780`` (``--inbox-port``) and prints its URL and the
  demo approver's sign-in (the local sign-in, not for production), where the same run can be
  decided in a browser.

The gateway (webhooks, events, health; :mod:`gateway.app`) serves tenant ``demo`` on
``127.0.0.1:8600`` (``--gateway-port``; any free port when taken) and its URL is printed.

The fake services listen on ``127.0.0.1:8700`` (``--services-port``), the address the README's
examples use. The server, the store, the worker and the fake services stay up until Ctrl-C (or, when
stdin is not a terminal, until stdin ends), so the runs can be explored in the Web UI and decided
with ``wfa``; ``--exit`` (or an empty stdin such as ``< /dev/null``, as in CI) stops at once. The
store is closed on the way out (the embedded server stops unless another process still uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import logging
import os
import select
import shlex
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from temporalio.contrib.pydantic import pydantic_data_converter

from activities.outbound import OutboundPolicy, build_http_client
from activities.secrets import ChainSecretStore, Secret, configure_secret_store, store_from_env
from activities.store.database import DATABASE_URL_ENV, Database, open_database
from activities.store.embedded import data_dir, stop_embedded
from activities.store.errors import StoreError
from activities.store.repository import DeadLetter, Registration
from interpreter.state import RunResult, RunState
from interpreter.validate import DefinitionError
from starter import tokens
from starter.cli import print_result
from starter.client import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE, FlowClient, RunHandle
from starter.devserver import DEFAULT_PORT, STATE_DIR_ENV, DevServer, DevServerError
from starter.errors import DecisionRefusedError, StarterError
from starter.mailbox import LocalMailbox
from worker import build_worker
from workflows import decision_tokens
from workflows.search_attributes import DEFINITION_HASH, DEFINITION_NAME, DEFINITION_VERSION
from workflows.search_attributes import TENANT as TENANT_ATTRIBUTE

__all__ = ["FakeServices", "main"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RESULT_TIMEOUT_S = 90.0
APPROVAL_TIMEOUT_S = 30.0
DEAD_LETTER_TIMEOUT_S = 30.0
TENANT = "demo"
AUTHOR = "demo"
OPERATOR = "ops"
VERSIONED_EXAMPLE = "expense-approval"
"""The example the demo registers a changed copy of, activates and rolls back."""
DEAD_LETTER_EXAMPLE = "order-fulfilment"
DEAD_LETTER_STEP = "charge_payment"
SERVICES_PORT = 8700
"""Where the fake services listen while the demo runs (the README's examples use it as ``api``)."""
WAITING_APPROVER = "manager"
"""Who may approve the expense run the demo leaves waiting for the person who ran it."""
GATEWAY_PORT = 8600
"""Where the demo's gateway listens (any free port when taken)."""
HASH_SHOWN = 12
"""Characters of a content hash printed (the Web UI and ``wfa definitions show`` have all 64)."""

log = logging.getLogger("starter.demo")


# ------------------------------------------------------------------------------- fake services


Reply = tuple[int, Any]


class FakeServices:
    """The systems the examples call, on ``127.0.0.1`` in a thread (stdlib ``http.server``).

    Notification, CRM, inventory, payment, shipping, monitoring and sentiment endpoints with
    canned, plausible answers. A payment token ``tok_declined`` is declined (402); any path under
    ``/broken/`` answers 503, so a site can be shown down.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.texts: list[dict[str, str]] = []
        """Text messages and calls the Twilio-shaped endpoint received (its form fields)."""
        self._server: ThreadingHTTPServer | None = None
        self.taken_port: int | None = None
        """The fixed port asked for when it was in use (the services then listen elsewhere)."""

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, port: int = 0) -> FakeServices:
        """Binds ``127.0.0.1:port`` (0: an ephemeral one) and serves in a daemon thread.

        A fixed port that is taken falls back to an ephemeral one; :attr:`taken_port` then says which
        port was wanted, so the caller can tell the person reading.
        """
        services = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    body = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
                path = urlsplit(self.path).path
                status, payload = services.answer(self.command, path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            if port == 0:
                raise
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.taken_port = port
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="fake-services", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stops serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}"

    def answer(self, method: str, path: str, body: Any) -> Reply:
        """The canned answer to one request."""
        with self._lock:
            self.requests.append((method, path))
        parts = [p for p in path.split("/") if p]
        body = body if isinstance(body, dict) else {}
        if parts[:1] == ["broken"]:
            return 503, {"status": "unavailable"}
        routes: dict[tuple[str, str], Callable[[], Reply]] = {
            ("GET", "/health"): lambda: (200, {"status": "ok"}),
            ("POST", "/notifications/email"): lambda: (202, {"id": self._id("email"), "status": "queued"}),
            ("POST", "/notifications/sms"): lambda: (202, {"id": self._id("sms"), "status": "queued"}),
            ("POST", "/tasks"): lambda: (201, {"id": self._id("task"), "status": "open"}),
            ("POST", "/crm/tasks"): lambda: (201, {"id": self._id("crm-task")}),
            ("POST", "/crm/sequences/nurture/enrolments"): lambda: (201, {"id": self._id("enrolment")}),
            ("POST", "/inventory/reservations"): lambda: (201, {"reservation_id": self._id("R")}),
            ("POST", "/payments/refunds"): lambda: (201, {"id": self._id("re")}),
            ("POST", "/payments/reimbursements"): lambda: (201, {"id": self._id("po")}),
            ("POST", "/shipments"): lambda: (201, {"tracking": f"1Z{next(self._counter):08d}"}),
            ("POST", "/alerts/slack"): lambda: (200, {"ok": True}),
            ("POST", "/uptime/log"): lambda: (201, {"ok": True}),
            ("POST", "/reports"): lambda: (201, {"id": self._id("RPT")}),
            ("POST", "/sentiment"): lambda: (200, _sentiment(str(body.get("text", "")))),
        }
        route = routes.get((method, path))
        if route is not None:
            return route()
        if len(parts) == 4 and parts[:2] == ["2010-04-01", "Accounts"] and parts[3:] == ["Messages.json"]:
            return self._twilio(parts[2], "SM", body)
        if len(parts) == 4 and parts[:2] == ["2010-04-01", "Accounts"] and parts[3:] == ["Calls.json"]:
            return self._twilio(parts[2], "CA", body)
        if method == "POST" and path == "/payments/charges":
            if body.get("token") == "tok_declined":
                return 402, {"error": "card_declined"}
            return 201, {"charge_id": self._id("ch"), "amount": body.get("amount")}
        if method == "GET" and len(parts) == 3 and parts[0] == "families" and parts[2] == "responses":
            return 200, {"responded": False, "family_id": parts[1]}
        if len(parts) >= 3 and parts[:2] == ["crm", "leads"]:
            if method == "POST" and parts[3:] == ["score"]:
                return 200, {"score": 86, "model": "lead-score-v3"}
            if method == "GET" and parts[3:] == ["enrichment"]:
                return 200, {"employees": 240, "industry": "retail"}
            if method == "PATCH" and len(parts) == 3:
                return 200, {"id": parts[2], **body}
        if method == "POST" and len(parts) == 4 and parts[:2] == ["inventory", "reservations"]:
            return 200, {"reservation_id": parts[2], "status": "released"}
        return 404, {"error": f"no such endpoint: {method} {path}"}

    def _twilio(self, account: str, prefix: str, form: dict[str, Any]) -> Reply:
        """Twilio's answer to a new message or call (the shape the ``sms``/``call`` actions read)."""
        if not form.get("To") or not form.get("From"):
            return 400, {"code": 21604, "message": "A 'To' and a 'From' are required.", "status": 400}
        with self._lock:
            self.texts.append({k: str(v) for k, v in form.items()})
        sid = f"{prefix}{next(self._counter):032x}"
        return 201, {
            "sid": sid,
            "account_sid": account,
            "to": form["To"],
            "from": form["From"],
            "status": "queued",
        }


DEMO_ACCOUNT_SID = "AC" + "d" * 32
"""The fake provider's account (any id of Twilio's shape will do)."""


def demo_settings(mailbox_port: int, services_url: str) -> dict[str, str]:
    """The demo tenant's email and SMS settings: its mail server is the local mailbox, its SMS
    provider the fake services (in production these are the tenant's scoped secrets)."""
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mailbox_port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "Family outreach <outreach@school.example>",
        "TWILIO_BASE_URL": services_url,
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "demo-auth-token",
        "TWILIO_FROM": "+13125550199",
    }


@dataclass(frozen=True)
class _TenantSettings:
    """One tenant's settings as a secret store (the rest come from the usual sources)."""

    tenant: str
    values: dict[str, str]

    def get(self, tenant: str, name: str) -> Secret | None:
        value = self.values.get(name) if tenant == self.tenant else None
        return None if value is None else Secret(value)


def print_mailbox(mailbox: LocalMailbox, services: FakeServices) -> None:
    """What the local SMTP server and the fake SMS provider received."""
    print(f"\nThe local SMTP server (127.0.0.1:{mailbox.port}) received {len(mailbox.received)} email(s):")
    for mail in mailbox.received:
        message = mail.message
        print(f"  From {message['From']}  To {', '.join(mail.rcpt_tos)}")
        print(f"    Subject     {message['Subject']}")
        print(f"    Message-ID  {message['Message-ID']}")
        try:
            text = " / ".join(line.strip() for line in mail.part("text/plain").splitlines() if line.strip())
        except KeyError:
            text = "(no text part)"
        print(f"    Text        {text if len(text) <= 100 else text[:99] + '…'}")
    print(f"The fake SMS provider received {len(services.texts)} text message(s) or call(s):")
    for sent in services.texts:
        print(f"  To {sent.get('To')} from {sent.get('From')}: {sent.get('Body', sent.get('Twiml', ''))}")


def _sentiment(text: str) -> dict[str, Any]:
    words = text.lower()
    score = 0.0
    score += 0.45 * sum(words.count(w) for w in ("great", "love", "perfect", "fast"))
    score -= 0.45 * sum(words.count(w) for w in ("broken", "late", "refund", "worst"))
    score = max(-1.0, min(1.0, round(score, 2)))
    label = "positive" if score > 0.3 else "negative" if score < -0.3 else "neutral"
    return {"score": score, "label": label}


# --------------------------------------------------------------------------------------- the runs


@dataclass
class DemoRun:
    """One example run of the demo."""

    title: str
    example: str
    workflow_id: str
    input: dict[str, Any]
    expect: RunState = RunState.COMPLETED
    ref: str = ""
    """The registry reference it starts from (``name`` or ``name@N``); default the example's name."""
    dead_letter: bool = False
    """Its payment step parks as a dead letter, which the demo redrives."""
    handle: RunHandle | None = None
    result: RunResult | None = None
    notes: list[str] = field(default_factory=list)


def plan(api: str, suffix: str) -> list[DemoRun]:
    """The runs the demo makes, with short delays and business keys unique to this launch."""
    reviews = [
        {"id": "rv-1", "text": "Great mug, love the colour"},
        {"id": "rv-2", "text": "Arrived broken and late, I want a refund"},
        {"id": "rv-3", "text": "It is a mug."},
        {"id": "rv-4", "text": "Fast delivery, perfect gift"},
        {"id": "rv-5", "text": "Handle broken after a week"},
        {"id": "rv-6", "text": "great value"},
        {"id": "rv-7", "text": "ok"},
    ]
    order = {
        "email": "buyer@example.org",
        "currency": "EUR",
        "address": {"street": "1 Main St", "city": "Springfield"},
        "items": [{"sku": "MUG", "qty": 2, "unit_price": 9.99}, {"sku": "TEE", "qty": 1, "unit_price": 20}],
    }
    family = {
        "id": "F17",
        "name": "Martinez family",
        "email": "martinez@example.org",
        "phone": "+13125550100",
    }
    lead = {
        "id": "L42",
        "name": "Dana Lee",
        "email": "dana@acme.test",
        "company": "Acme",
        "owner": "sales-rep",
    }
    expense = {
        "id": "EXP-7",
        "employee": "sam",
        "email": "sam@example.org",
        "amount": 640,
        "description": "conference travel",
    }
    return [
        DemoRun(
            "Intervention: email, then the family's answer arrives as an event (seed 001)",
            "intervention",
            f"intervention-family-F17-{suffix}",
            # The family id is the events' correlation key: unique to this launch, so an answer
            # published by an earlier launch (kept for lookbacks) is not this run's.
            {"api": api, "family": {**family, "id": f"F17-{suffix}"}, "business_hours": False},
        ),
        DemoRun(
            "Lead nurture: CRM task, parallel scoring, human qualification, switch (seed 002)",
            "lead-nurture",
            f"lead-nurture-L42-{suffix}",
            {"api": api, "lead": lead},
        ),
        DemoRun(
            "Order fulfilment: reserve, charge, ship (seed 003)",
            "order-fulfilment",
            f"order-SO-1001-{suffix}",
            {"api": api, "order": {"id": "SO-1001", "payment_token": "tok_visa", **order}},
        ),
        DemoRun(
            "Order fulfilment, card declined: the reservation is released (seed 003)",
            "order-fulfilment",
            f"order-SO-1002-{suffix}",
            {"api": api, "order": {"id": "SO-1002", "payment_token": "tok_declined", **order}},
            expect=RunState.COMPENSATED,
        ),
        DemoRun(
            "Expense approval by the manager (seed 003)",
            "expense-approval",
            f"expense-EXP-7-{suffix}",
            {"api": api, "expense": expense},
        ),
        DemoRun(
            "Uptime check, site up (seed 004)",
            "uptime-check",
            f"uptime-shop-{suffix}",
            {"api": api, "site": "shop.example.org"},
        ),
        DemoRun(
            "Uptime check, site down: on-call alerted (seed 004)",
            "uptime-check",
            f"uptime-status-{suffix}",
            {"api": api, "site": "status.example.org", "path": "/broken/health"},
        ),
        DemoRun(
            "Review analysis: map 7 reviews 3 at a time, reduce (seed 004)",
            "review-analysis",
            f"reviews-mug-{suffix}",
            {"api": api, "product": "mug", "reviews": reviews},
        ),
    ]


async def _wait_for_approval(flows: FlowClient, workflow_id: str) -> list[str]:
    """Waits until the run has a pending approval; returns its approvers."""
    async with asyncio.timeout(APPROVAL_TIMEOUT_S):
        while True:
            status = await flows.status(workflow_id)
            if status.pending_approvals:
                return status.pending_approvals[0].approvers
            if status.state not in (RunState.RUNNING, RunState.AWAITING_APPROVAL):
                return []
            await asyncio.sleep(0.2)


async def _wait_for_event_wait(flows: FlowClient, workflow_id: str) -> bool:
    """Waits until the run waits for an event (subscribed to its mailbox); False if it ended."""
    async with asyncio.timeout(APPROVAL_TIMEOUT_S):
        while True:
            status = await flows.status(workflow_id)
            if any(w.subscribed for w in status.waiting_events):
                return True
            if status.state != RunState.RUNNING:
                return False
            await asyncio.sleep(0.2)


def _decision_keys(state_dir: Path) -> Path:
    """The demo's signing key (made on first use) and, configured for the in-process worker, the
    key set it verifies decision tokens with. Returns the signing key's path."""
    folder = state_dir / "decision-keys"
    private, jwks = folder / "signing.jwk", folder / "jwks.json"
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tokens.write_keys(private, jwks, "demo-key")
    keys = json.loads(jwks.read_text(encoding="utf-8"))
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(keys))
    return private


async def _minted(flows: FlowClient, workflow_id: str, actor: str, signing_key: Path) -> str:
    """A token for ``actor`` to approve the run's pending approval (as a link for a person would carry)."""
    status = await flows.status(workflow_id)
    step = status.pending_approvals[0].step_id
    return await flows.mint_decision_token(
        workflow_id, actor, ["approve"], step_id=step, signing_key=str(signing_key)
    )


async def _decide(flows: FlowClient, run: DemoRun, signing_key: Path) -> None:
    """Plays the people: the expense manager (after a refused outsider), the sales rep, the operator."""
    if run.dead_letter:
        await _redrive(flows, run)
    elif run.example == "expense-approval":
        approvers = await _wait_for_approval(flows, run.workflow_id)
        print(f"  {run.workflow_id}: waiting for {', '.join(approvers)}")
        # mallory signs a token for the manager with a key of her own, under the demo key's id.
        forger, _ = tokens.generate_keys("demo-key")
        status = await flows.status(run.workflow_id)
        forged = tokens.mint(
            forger,
            tenant=flows.tenant,
            run=run.workflow_id,
            actor="manager",
            decisions=["approve"],
            step=status.pending_approvals[0].step_id,
        )
        for actor, token in (("manager", forged), ("mallory", None)):
            try:
                await flows.approve(run.workflow_id, actor, reason="looks fine to me", token=token)
            except DecisionRefusedError as err:
                what = "a forged token" if token else "no token"
                print(
                    f"  {run.workflow_id}: mallory approves as {actor} with {what} -> refused: {err.reason}"
                )
                run.notes.append(f"refused: mallory as {actor} ({err.reason})")
        record = await flows.approve(
            run.workflow_id,
            "manager",
            reason="within budget",
            data={"comment": "enjoy"},
            token=await _minted(flows, run.workflow_id, "manager", signing_key),
        )
        print(f"  {run.workflow_id}: approved by {record.actor if record else 'manager'}")
        run.notes.append("approved by manager through the client API")
    elif run.example == "intervention":
        if await _wait_for_event_wait(flows, run.workflow_id):
            family_id = str(run.input["family"]["id"])
            published = await flows.publish_event(
                "family.answered",
                family_id,
                {"channel": "sms", "message": "We are fine, thanks for checking in"},
                event_id=f"answer-{family_id}",
                source="demo",
                start_triggers=False,
            )
            print(
                f"  {run.workflow_id}: the family answers: event family.answered (key {family_id})"
                f" resumed {len(published.delivered_to)} waiting run(s)"
            )
            run.notes.append("answered by a family.answered event")
    elif run.example == "lead-nurture":
        approvers = await _wait_for_approval(flows, run.workflow_id)
        print(f"  {run.workflow_id}: waiting for {', '.join(approvers)} to qualify the lead")
        data = {"next_action": "demo", "call_date": "2030-01-07T15:00:00Z", "notes": "budget confirmed"}
        token = await _minted(flows, run.workflow_id, "sales-rep", signing_key)
        await flows.approve(run.workflow_id, "sales-rep", reason="qualified", data=data, token=token)
        print(f"  {run.workflow_id}: qualified by sales-rep with form {json.dumps(data)}")
        run.notes.append("qualified by sales-rep with a form")


def waiting_run(api: str, suffix: str) -> DemoRun:
    """The expense run the demo starts last and leaves waiting for the person who ran it."""
    expense = {
        "id": "EXP-8",
        "employee": "kim",
        "email": "kim@example.org",
        "amount": 980,
        "description": "team offsite catering",
    }
    return DemoRun(
        "Expense approval left waiting for you (seed 003)",
        "expense-approval",
        f"expense-EXP-8-{suffix}",
        {"api": api, "expense": expense},
    )


def dead_letter_run(api: str, suffix: str, ref: str) -> DemoRun:
    """The extra run of the order-fulfilment variant whose declined payment becomes a dead letter."""
    order = {
        "id": "SO-1003",
        "payment_token": "tok_declined",
        "email": "buyer@example.org",
        "currency": "EUR",
        "address": {"street": "2 Main St", "city": "Springfield"},
        "items": [{"sku": "MUG", "qty": 1, "unit_price": 9.99}],
    }
    return DemoRun(
        "Order fulfilment with a dead letter: card declined, parked, redriven with another card (seed 003)",
        DEAD_LETTER_EXAMPLE,
        f"order-SO-1003-{suffix}",
        {"api": api, "order": order},
        ref=ref,
        dead_letter=True,
    )


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return document


def changed_copy(name: str) -> dict[str, Any]:
    """The example with another description: the same steps, a new body (so a new version)."""
    document = _example(name)
    document["description"] = (
        "Expense approval (reworded by the demo): the manager approves expenses over the policy"
        " limit, the director is asked after 2 days, the expense is rejected after 5."
    )
    return document


def dead_letter_variant(name: str = DEAD_LETTER_EXAMPLE, step_id: str = DEAD_LETTER_STEP) -> dict[str, Any]:
    """The example with ``on_failure: dead_letter`` on its payment step (examples/ stays as it is)."""
    document = _example(name)
    steps = [s for s in document["steps"] if s.get("id") == step_id]
    assert len(steps) == 1, f"{name} has no step {step_id!r}"
    steps[0]["on_failure"] = "dead_letter"
    document["description"] = (
        "Order fulfilment whose declined payment is parked as a dead letter for an operator to"
        " redrive, skip or abort, instead of releasing the reservation at once."
    )
    return document


def _short_hash(digest: str) -> str:
    return digest[:HASH_SHOWN]


def _registered(registration: Registration, label: str) -> str:
    info = registration.info
    what = "registered" if registration.created else "already registered (same content hash)"
    active = "active" if info.active else f"not active (v{registration.active_version} is)"
    return f"  {label:<22} v{info.version}  {_short_hash(info.content_hash)}  {what}, {active}"


async def register_examples(flows: FlowClient) -> None:
    """Registers every example; the same body again is the same version (nothing new is stored)."""
    print(
        f"Registering the examples in the definition registry (tenant {flows.tenant!r}, author {AUTHOR!r}):"
    )
    for path in sorted(EXAMPLES.glob("*.json")):
        registration = await flows.register(path, author=AUTHOR)
        print(_registered(registration, registration.info.name))


async def print_registry(flows: FlowClient) -> None:
    """The registry listing: every name with its active version and that version's content hash."""
    store = await flows.definitions()
    print(f"\nRegistry of tenant {flows.tenant!r}  (wfa --tenant {flows.tenant} definitions list)")
    print(f"  {'NAME':<22} {'ACTIVE':<7} {'VERSIONS':<9} {'HASH':<{HASH_SHOWN}}  UPDATED BY")
    for summary in await store.list_names():
        active = await store.get(summary.name, summary.active_version)
        print(
            f"  {summary.name:<22} v{summary.active_version:<6} {summary.versions:<9}"
            f" {_short_hash(active.content_hash)}  {summary.updated_by}"
        )


async def show_versioning(flows: FlowClient, waiting: DemoRun | None) -> None:
    """A changed copy of an example as the next version: diff, activate, roll back."""
    name = VERSIONED_EXAMPLE
    print(f"\nVersioning {name} (runs already started keep the version they were started with):")
    registration = await flows.register(changed_copy(name), author=AUTHOR)
    print(_registered(registration, f"{name} (changed copy)"))
    new = registration.info.version
    old = registration.active_version
    if new == old or old is None:
        print(f"  v{new} is already active; nothing to show")
        return
    diff = await flows.diff(name, old, new)
    print(f"  wfa definitions diff {name} {old} {new}:")
    for line in diff.splitlines():
        print(f"    {line if len(line) <= 110 else line[:109] + '…'}")
    if waiting is not None:
        await _wait_for_approval(flows, waiting.workflow_id)  # so the activation happens mid-run
    activation = await flows.activate(name, new, actor=OPERATOR)
    print(
        f"  activate {name} v{activation.version} by {OPERATOR}: new runs by name now use v{activation.version} (was v{activation.previous})"
    )
    if waiting is not None:
        status = await flows.status(waiting.workflow_id)
        print(
            f"  {waiting.workflow_id} is still {status.state} on {status.definition} v{status.version} (pinned)"
        )
    rollback = await flows.rollback(name, actor=OPERATOR)
    print(f"  rollback {name} by {OPERATOR}: v{rollback.version} is active again (was v{rollback.previous})")


async def register_dead_letter_variant(flows: FlowClient) -> str:
    """Registers the order-fulfilment variant (not activated); returns its pinned reference."""
    print(
        f"\nDead letters: a variant of {DEAD_LETTER_EXAMPLE} with {DEAD_LETTER_STEP}.on_failure = dead_letter"
    )
    registration = await flows.register(dead_letter_variant(), author=AUTHOR)
    print(_registered(registration, f"{DEAD_LETTER_EXAMPLE} (variant)"))
    return f"{registration.info.name}@{registration.info.version}"


def _dead_letter_rows(rows: list[DeadLetter]) -> list[str]:
    """Dead letter rows as a small table (id, step, attempts, status, resolved by, error)."""
    lines = [f"{'ID':<4} {'STEP':<16} {'ATTEMPTS':<9} {'STATUS':<9} {'RESOLVED BY':<12} ERROR"]
    for row in rows:
        error = f"{row.error_type}: {row.error}"
        error = error if len(error) <= 110 else error[:109] + "…"
        lines.append(
            f"{row.id:<4} {row.step_id:<16} {row.attempts:<9} {row.status!s:<9} {row.resolved_by or '-':<12} {error}"
        )
    return lines


async def _parked_row(flows: FlowClient, workflow_id: str) -> DeadLetter | None:
    """Waits for the run's open dead letter; None if the run ended without parking."""
    try:
        async with asyncio.timeout(DEAD_LETTER_TIMEOUT_S):
            while True:
                rows = await flows.list_dead_letters(workflow_id=workflow_id)
                if rows:
                    return rows[0]
                description = await flows.describe(workflow_id)
                if description.status is not None and description.status.name != "RUNNING":
                    return None
                await asyncio.sleep(0.2)
    except TimeoutError:
        return None


async def _redrive(flows: FlowClient, run: DemoRun) -> None:
    """Plays the operator: finds the parked payment, redrives it with another card, checks the row."""
    row = await _parked_row(flows, run.workflow_id)
    if row is None:
        print(
            f"  {run.workflow_id}: no dead letter (the run ended, or none within {DEAD_LETTER_TIMEOUT_S:g}s)"
        )
        run.notes.append("no dead letter was parked")
        return
    status = await flows.status(run.workflow_id)
    print(f"  {run.workflow_id}: {status.state}; its row in list_dead_letters():")
    for line in _dead_letter_rows([row]):
        print(f"    {line}")
    corrected = {**row.input, "json": {**row.input.get("json", {}), "token": "tok_visa"}}
    await flows.redrive(row.id, OPERATOR, corrected, reason="the customer gave another card")
    print(f"  {run.workflow_id}: {OPERATOR} redrives dead letter #{row.id} with the input's token tok_visa")
    result = await flows.result(run.workflow_id, timeout=RESULT_TIMEOUT_S)
    rows = await flows.list_dead_letters(status=None, workflow_id=run.workflow_id)
    print(f"  {run.workflow_id}: {result.state}; list_dead_letters(status=None) now:")
    for line in _dead_letter_rows(rows):
        print(f"    {line}")
    resolved = next((r for r in rows if r.id == row.id), row)
    run.notes.append(
        f"dead letter #{row.id} parked at {row.step_id} ({row.error_type}, {row.attempts} attempt(s));"
        f" redriven by {OPERATOR} with token tok_visa; row {resolved.status}"
        + (f" by {resolved.resolved_by}" if resolved.resolved_by else "")
    )


async def _pinned(flows: FlowClient, workflow_id: str) -> str:
    """What the run's search attributes and memo say it runs (as the Web UI shows them)."""
    description = await flows.describe(workflow_id)
    attributes = description.typed_search_attributes
    memo = await description.memo()
    name = attributes.get(DEFINITION_NAME)
    version = attributes.get(DEFINITION_VERSION)
    digest = attributes.get(DEFINITION_HASH) or ""
    tenant = attributes.get(TENANT_ATTRIBUTE) or memo.get("tenant", "?")
    source = f"{memo.get('source', '?')}, tenant {tenant}"
    return f"{name} v{version}, hash {_short_hash(digest)} ({source})"


def ui_link(ui_url: str, namespace: str, workflow_id: str) -> str:
    """The Web UI page of a run."""
    return f"{ui_url}/namespaces/{namespace}/workflows/{workflow_id}"


async def run_demo(args: argparse.Namespace) -> int:
    """Starts everything, runs the examples, prints the results, then waits for Ctrl-C."""
    server = DevServer(args.state_dir, port=args.port)
    print(f"Starting the Temporal dev server (state in {server.state_dir}) ...")
    try:
        await server.astart()
    except DevServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    services = FakeServices().start(args.services_port)
    mailbox = await LocalMailbox().start()
    configure_secret_store(
        ChainSecretStore(
            (_TenantSettings(TENANT, demo_settings(mailbox.port, services.url)), store_from_env())
        )
    )
    database: Database | None = None
    try:
        database = await _open_store(server.state_dir)
        async with _gateway(args, server, database):
            return await _with_server(args, server, services, database, mailbox)
    except (StoreError, DefinitionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        decision_tokens.configure(None)  # the in-process worker's keys go with it
        if database is not None:
            await database.close()
            if database.embedded:
                await asyncio.to_thread(stop_embedded, server.state_dir)
            print("Closed the store.")
        services.stop()
        await mailbox.stop()
        configure_secret_store(None)
        await server.astop()
        print("Stopped the dev server.")


@contextlib.asynccontextmanager
async def _gateway(args: argparse.Namespace, server: DevServer, database: Database) -> AsyncIterator[None]:
    """The gateway (webhooks, events, health) for the demo's tenant, in this process."""
    from gateway.config import GatewayConfig
    from gateway.serve import running

    config = GatewayConfig(
        tenants=(TENANT,),
        address=server.address,
        task_queue=args.task_queue,
        database_url=database.url.render_as_string(hide_password=False),
    )
    async with running(config, port=args.gateway_port) as url:
        print(
            f"Gateway {url}  (webhooks /hooks/{TENANT}/..., POST /events, /readyz; OpenAPI docs {url}/docs)"
        )
        yield


async def _open_store(state_dir: Path) -> Database:
    """``open_database()``: ``$DATABASE_URL``'s server, else the embedded one under ``state_dir``."""
    if os.environ.get(DATABASE_URL_ENV):
        database = await open_database()
        print(f"Store: PostgreSQL from {DATABASE_URL_ENV}, {database.safe_url}")
    else:
        print(f"Starting the embedded PostgreSQL (data in {data_dir(state_dir)}) ...")
        database = await open_database(state_dir=state_dir)
        print(f"Store: embedded PostgreSQL, {database.safe_url}")
    return database


async def _with_server(
    args: argparse.Namespace,
    server: DevServer,
    services: FakeServices,
    database: Database,
    mailbox: LocalMailbox,
) -> int:
    print(f"Temporal {server.address}, Web UI {server.ui_url}")
    print(f"Fake services (notifications, CRM, inventory, payments, shipping, sentiment) at {services.url}")
    print(f"Local SMTP server (the demo tenant's mail server) at 127.0.0.1:{mailbox.port}")
    if services.taken_port is not None:
        print(
            f"  (port {services.taken_port} is in use, so they listen on another one: use {services.url}"
            ' as "api" in the README\'s examples while the demo runs)'
        )
    client = await server.connect(data_converter=pydantic_data_converter)
    flows = FlowClient(client, task_queue=args.task_queue, database=database, tenant=TENANT)
    signing_key = _decision_keys(server.state_dir)
    flows.decision_proof = True  # the demo's runs require signed decision tokens
    suffix = datetime.now().strftime("%m%d-%H%M%S")  # noqa: DTZ005 - a local, human-readable key
    runs = plan(services.url, suffix)
    failed = 0
    # The worker's outbound policy as in production, allowing loopback: the demo's services listen there.
    async with (
        build_http_client(OutboundPolicy.loopback()) as http_client,
        build_worker(
            client,
            flows.task_queue,
            http_client,
            session_factory=database.session_factory,
            outbound_policy=OutboundPolicy.loopback(),
        ),
        contextlib.AsyncExitStack() as stack,
    ):
        print(f"Worker polling task queue {flows.task_queue!r} (with the dead-letter activities)\n")
        await register_examples(flows)
        await print_registry(flows)
        print(
            f"\nStarting the runs by name (tenant {flows.tenant!r}); each is pinned to the version it starts with:"
        )
        for run in runs:
            await _start(flows, run)
        await show_versioning(flows, next((r for r in runs if r.example == VERSIONED_EXAMPLE), None))
        ref = await register_dead_letter_variant(flows)
        extra = dead_letter_run(services.url, suffix, ref)
        await _start(flows, extra)
        runs.append(extra)
        print()
        await asyncio.gather(*(_decide(flows, run, signing_key) for run in runs))
        print("\nWaiting for every run to end ...\n")

        async def finish(run: DemoRun) -> None:
            run.result = await flows.result(run.workflow_id, timeout=RESULT_TIMEOUT_S)

        await asyncio.gather(*(finish(run) for run in runs))
        pinned = await asyncio.gather(*(_pinned(flows, run.workflow_id) for run in runs))
        print("=" * 100)
        for run, definition in zip(runs, pinned, strict=True):
            assert run.result is not None
            print(f"\n{run.title}")
            print_result(run.workflow_id, run.result, sys.stdout)
            print(f"{'Pinned to'.ljust(12)}  {definition}")
            for note in run.notes:
                print(f"  note: {note}")
            print(f"Web UI  {ui_link(server.ui_url, server.namespace, run.workflow_id)}")
            if run.result.state != run.expect:
                print(f"  UNEXPECTED: expected {run.expect}")
                failed += 1
        print("\n" + "=" * 100)
        print(
            f"{len(runs) - failed}/{len(runs)} runs ended as expected; the fake services answered {len(services.requests)} requests."
        )
        print_mailbox(mailbox, services)
        print(f"\nWeb UI: {server.ui_url}  (runs are listed under namespace {server.namespace!r})")
        print(
            "        runs of one version, as a query in its list:"
            f' DefinitionName = "{DEAD_LETTER_EXAMPLE}" AND DefinitionVersion = {extra.ref.rpartition("@")[2]}'
        )
        waiting = waiting_run(services.url, suffix)
        flows.decision_proof = False  # decided with the printed commands, which carry no token
        await _leave_waiting(flows, waiting, server, args.task_queue, services.url)
        inbox = await start_inbox(flows, server.state_dir, signing_key, args.inbox_port)
        stack.push_async_callback(inbox.stop)
        print(
            f"\nOr decide it in a browser, in the approvals inbox: {inbox.url}\n"
            f"  sign in as organisation {TENANT!r}, user {inbox.username!r}, password {inbox.password!r}\n"
            "  (the demo's local sign-in, not for production: production signs in with OpenID Connect)"
        )
        stay = not args.exit and sys.stdin is not None and (sys.stdin.isatty() or not _stdin_at_end())
        if not stay:
            print(
                f"\nStopping now (--exit, or stdin ended); {waiting.workflow_id} stays waiting in"
                f" {server.state_dir} and the commands above work while `make demo` runs again."
            )
            return 1 if failed else 0
        watch_stdin = not sys.stdin.isatty()
        print(
            "\nThe server, the store, the worker and the fake services stay up until Ctrl-C"
            + (" or the end of stdin." if watch_stdin else ".")
        )
        await _until_stopped(watch_stdin)
    return 1 if failed else 0


def wfa_command() -> list[str]:
    """How to run ``wfa`` from a new shell in the current folder, where ``wfa`` need not be on the PATH.

    The ``wfa`` script next to this Python (``.venv/bin/wfa`` for ``make demo``), relative to the
    current folder when it is inside it; else ``python -m starter`` with this Python.
    """
    python = Path(sys.executable)  # not resolved: a venv's python is a symlink to the base one
    script = python.parent / "wfa"
    if script.is_file():
        return [_from_cwd(script)]
    return [_from_cwd(python), "-m", "starter"]


def _from_cwd(path: Path) -> str:
    path = path.absolute()
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if len(relative.parts) > 1 else f"./{relative}"


def cli_prefix(address: str, namespace: str, state_dir: Path, task_queue: str, tenant: str) -> str:
    """The start of a ``wfa`` command that reaches the demo's server, store and tenant from a new
    shell in the current folder (options only where they differ from ``wfa``'s defaults)."""
    env = (
        ""
        if os.environ.get(DATABASE_URL_ENV) or state_dir.absolute() == (Path.cwd() / ".state").absolute()
        else f"{STATE_DIR_ENV}={shlex.quote(str(state_dir.absolute()))} "
    )
    argv = wfa_command()
    if address != DEFAULT_ADDRESS:
        argv += ["--address", address]
    if namespace != DEFAULT_NAMESPACE:
        argv += ["--namespace", namespace]
    if task_queue != DEFAULT_TASK_QUEUE:
        argv += ["--task-queue", task_queue]
    argv += ["--tenant", tenant]
    return env + shlex.join(argv)


async def _leave_waiting(
    flows: FlowClient, run: DemoRun, server: DevServer, task_queue: str, api: str
) -> None:
    """Starts the run left for the person who ran the demo and prints how to decide it with ``wfa``."""
    print("\nOne more expense run, left waiting for you:")
    await _start(flows, run)
    approvers = await _wait_for_approval(flows, run.workflow_id)
    status = await flows.status(run.workflow_id)
    wfa = cli_prefix(server.address, server.namespace, server.state_dir, task_queue, flows.tenant)
    key = shlex.quote(run.workflow_id)
    uptime = shlex.quote(json.dumps({"api": api}))
    activate = shlex.quote(_from_cwd(Path(sys.executable).parent / "activate"))
    print(
        f"{run.workflow_id} is {status.state} on {status.definition} v{status.version}"
        f" (approvers: {', '.join(approvers) or '-'})."
    )
    print(f"Web UI  {ui_link(server.ui_url, server.namespace, run.workflow_id)}")
    print(
        f"In a new shell in this folder, while the demo runs (`. {activate}` puts wfa on the PATH):\n"
        "  # see it wait for the manager\n"
        f"  {wfa} status {key}\n"
        "  # approve it as the manager\n"
        f"  {wfa} approve {key} --actor {WAITING_APPROVER} --reason 'within budget'\n"
        "  # watch it finish (exit code 0 once it completed)\n"
        f"  {wfa} result {key} --timeout 60\n"
        "  # more to try\n"
        f"  {wfa} definitions list {VERSIONED_EXAMPLE}\n"
        f"  {wfa} dead-letters list --status all\n"
        f"  {wfa} start uptime-check --input {uptime} --wait"
    )
    if os.environ.get(DATABASE_URL_ENV):
        print(f"  (with {DATABASE_URL_ENV} exported as for the demo, for the definitions and dead letters)")


INBOX_PORT = 8780
"""Where the demo serves the approvals inbox (``--inbox-port``; 0: any free port)."""


@dataclass
class DemoInbox:
    """The approvals inbox the demo serves, and the demo approver's sign-in."""

    url: str
    username: str
    password: str
    stop: Callable[[], Any]


async def start_inbox(flows: FlowClient, state_dir: Path, signing_key: Path, port: int) -> DemoInbox:
    """Serves the approvals inbox for the demo's tenant on ``127.0.0.1:port`` (in this process).

    The demo approver (``manager``) signs in with a password made on first use and kept in
    ``<state>/inbox/users.json`` as an scrypt hash (the local sign-in, not for production; the
    password itself in ``<state>/inbox/password``, owner-only). The inbox mints decision tokens with
    the demo's signing key.
    """
    import secrets as random_secrets

    import uvicorn
    from fastapi import FastAPI

    from gateway.inbox import InboxConfig, LocalUsers, hash_password, install_inbox

    folder = state_dir / "inbox"
    folder.mkdir(parents=True, exist_ok=True)
    password_file, users_file = folder / "password", folder / "users.json"
    if not password_file.exists() or not users_file.exists():
        password = random_secrets.token_urlsafe(9)
        password_file.write_text(password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        user = {"tenant": TENANT, "username": WAITING_APPROVER, "name": "The manager", "groups": []}
        users_file.write_text(
            json.dumps({"users": [{**user, "password": hash_password(password)}]}, indent=2), encoding="utf-8"
        )
    password = password_file.read_text(encoding="utf-8").strip()

    async def client_for(tenant: str) -> FlowClient:
        if tenant != flows.tenant:
            raise StarterError(f"the demo serves tenant {flows.tenant!r} only")
        return flows

    app = FastAPI(title="wfa demo inbox")
    install_inbox(
        app,
        InboxConfig(
            clients=client_for,
            authenticator=LocalUsers.from_file(users_file),
            session_secret=random_secrets.token_bytes(32),
            signing_keys={TENANT: tokens.load_signing_key(signing_key)},
            secure_cookies=False,  # plain HTTP on loopback
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():  # e.g. the port is taken: any free one instead
            if port == 0:
                task.result()
            return await start_inbox(flows, state_dir, signing_key, 0)
        await asyncio.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]

    async def stop() -> None:
        server.should_exit = True
        await task

    return DemoInbox(f"http://127.0.0.1:{bound}/inbox/", WAITING_APPROVER, password, stop)


async def _start(flows: FlowClient, run: DemoRun) -> None:
    """Starts a run through the registry and says which version it is pinned to."""
    run.handle = await flows.start_run(run.ref or run.example, run.input, workflow_id=run.workflow_id)
    handle = run.handle
    print(
        f"  started {run.workflow_id:<36} {handle.definition} v{handle.version}"
        f" {_short_hash(handle.definition_hash)}  ({run.title})"
    )


def _stdin_at_end() -> bool:
    """True when a stdin that is not a terminal has nothing more to give (``< /dev/null``)."""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        stream = cast(io.BufferedReader, sys.stdin.buffer)
        return bool(ready) and not stream.peek(1)
    except (OSError, ValueError):  # closed, or not selectable
        return True


async def _until_stopped(watch_stdin: bool) -> None:
    """Returns on SIGINT/SIGTERM, or (``watch_stdin``) once stdin ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)

    def drain_stdin() -> None:
        with contextlib.suppress(OSError, ValueError):
            while cast(io.BufferedReader, sys.stdin.buffer).read1(4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    if watch_stdin:
        # A daemon thread, not to_thread: a read that never returns must not hold up the exit.
        threading.Thread(target=drain_stdin, name="demo-stdin", daemon=True).start()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Runs the demo.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 when every run ended as expected.
    """
    from gateway.cli import port_number

    parser = argparse.ArgumentParser(prog="python -m starter.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exit", action="store_true", help="stop once the runs are done (default: wait for Ctrl-C)"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="server state (default $WFA_STATE_DIR or ./.state)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="Temporal port (default %(default)s; Web UI +1000)"
    )
    parser.add_argument("--task-queue", default=DEFAULT_TASK_QUEUE, help="task queue of the demo worker")
    parser.add_argument(
        "--services-port",
        type=port_number,
        default=SERVICES_PORT,
        help="port of the fake services on 127.0.0.1 (default %(default)s; 0: any free one)",
    )
    parser.add_argument(
        "--gateway-port",
        type=port_number,
        default=GATEWAY_PORT,
        help="port of the gateway on 127.0.0.1 (default %(default)s; taken: any free one)",
    )
    parser.add_argument(
        "--inbox-port",
        type=port_number,
        default=INBOX_PORT,
        help="port of the approvals inbox on 127.0.0.1 (default %(default)s; 0: any free one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Steps that fail on purpose (a declined card, a site that is down) are logged by the SDK with
    # tracebacks; the demo prints them in the results instead.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    try:
        return asyncio.run(run_demo(args))
    except KeyboardInterrupt:
        return 130
    except StarterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
