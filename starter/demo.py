"""``python -m starter.demo`` (``make demo``): every example definition, end to end, on a local server.

It starts the Temporal dev server (state in ``.state/``, so the runs stay browsable after a
restart), a small local HTTP endpoint that plays the notification, CRM, inventory, payment,
shipping and sentiment services, and a worker in this process. Then it runs the examples from
``examples/`` with short delays (``wait: 2s`` instead of days, office hours off), approves the
runs that wait for a person through the client API (an unlisted actor first, to show the refusal),
and prints how each run ended with its Web UI link.

The server, the worker and the fake services stay up until Ctrl-C, so the runs can be explored in
the Web UI and more can be started with ``wfa``; ``--exit`` (or a stdin that is not a terminal,
as in CI) stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter

from interpreter.state import RunResult, RunState
from starter.cli import print_result
from starter.client import DEFAULT_TASK_QUEUE, FlowClient, RunHandle
from starter.devserver import DEFAULT_PORT, DevServer, DevServerError
from starter.errors import DecisionRefusedError, StarterError
from worker import build_worker

__all__ = ["FakeServices", "main"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RESULT_TIMEOUT_S = 90.0
APPROVAL_TIMEOUT_S = 30.0

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
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServices:
        """Binds an ephemeral port and serves in a daemon thread."""
        services = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
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

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
            "Intervention: email, wait, text, wait, call (seed 001)",
            "intervention",
            f"intervention-family-F17-{suffix}",
            {"api": api, "family": family, "wait": "2s", "business_hours": False},
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


async def _decide(flows: FlowClient, run: DemoRun) -> None:
    """Plays the people: the expense manager (after a refused outsider) and the sales rep."""
    if run.example == "expense-approval":
        approvers = await _wait_for_approval(flows, run.workflow_id)
        print(f"  {run.workflow_id}: waiting for {', '.join(approvers)}")
        try:
            await flows.approve(run.workflow_id, "mallory", reason="looks fine to me")
        except DecisionRefusedError as err:
            print(f"  {run.workflow_id}: mallory tries to approve -> refused: {err.reason}")
            run.notes.append(f"refused: mallory ({err.reason})")
        record = await flows.approve(
            run.workflow_id, "manager", reason="within budget", data={"comment": "enjoy"}
        )
        print(f"  {run.workflow_id}: approved by {record.actor if record else 'manager'}")
        run.notes.append("approved by manager through the client API")
    elif run.example == "lead-nurture":
        approvers = await _wait_for_approval(flows, run.workflow_id)
        print(f"  {run.workflow_id}: waiting for {', '.join(approvers)} to qualify the lead")
        data = {"next_action": "demo", "call_date": "2030-01-07T15:00:00Z", "notes": "budget confirmed"}
        await flows.approve(run.workflow_id, "sales-rep", reason="qualified", data=data)
        print(f"  {run.workflow_id}: qualified by sales-rep with form {json.dumps(data)}")
        run.notes.append("qualified by sales-rep with a form")


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
    services = FakeServices().start()
    try:
        return await _with_server(args, server, services)
    finally:
        services.stop()
        await server.astop()
        print("Stopped the dev server.")


async def _with_server(args: argparse.Namespace, server: DevServer, services: FakeServices) -> int:
    print(f"Temporal {server.address}, Web UI {server.ui_url}")
    print(f"Fake services (notifications, CRM, inventory, payments, shipping, sentiment) at {services.url}")
    client = await server.connect(data_converter=pydantic_data_converter)
    flows = FlowClient(client, task_queue=args.task_queue)
    suffix = datetime.now().strftime("%m%d-%H%M%S")  # noqa: DTZ005 - a local, human-readable key
    runs = plan(services.url, suffix)
    failed = 0
    async with httpx.AsyncClient() as http_client, build_worker(client, flows.task_queue, http_client):
        print(f"Worker polling task queue {flows.task_queue!r}\n")
        for run in runs:
            run.handle = await flows.start_run(
                EXAMPLES / f"{run.example}.json", run.input, workflow_id=run.workflow_id
            )
            print(f"started {run.workflow_id}  ({run.title})")
        print()
        await asyncio.gather(*(_decide(flows, run) for run in runs))
        print("\nWaiting for every run to end ...\n")

        async def finish(run: DemoRun) -> None:
            run.result = await flows.result(run.workflow_id, timeout=RESULT_TIMEOUT_S)

        await asyncio.gather(*(finish(run) for run in runs))
        print("=" * 100)
        for run in runs:
            assert run.result is not None
            print(f"\n{run.title}")
            print_result(run.workflow_id, run.result, sys.stdout)
            for note in run.notes:
                print(f"  note: {note}")
            print(f"Web UI  {ui_link(server.ui_url, server.namespace, run.workflow_id)}")
            expected_failure = run.input.get("order", {}).get("payment_token") == "tok_declined"
            if run.result.state != RunState.COMPLETED and not expected_failure:
                failed += 1
        print("\n" + "=" * 100)
        print(
            f"{len(runs) - failed}/{len(runs)} runs ended as expected; the fake services answered {len(services.requests)} requests."
        )
        print(f"\nWeb UI: {server.ui_url}  (runs are listed under namespace {server.namespace!r})")
        print(
            f"Try:    wfa --address {server.address} status {runs[0].workflow_id}"
            "    (wfa is `python -m starter` without the installed script)\n"
            f"        wfa --address {server.address} start examples/uptime-check.json"
            f' --input \'{{"api": "{services.url}"}}\' --wait'
        )
        if args.exit or not sys.stdin.isatty():
            return 1 if failed else 0
        print("\nThe server, the worker and the fake services stay up; Ctrl-C to stop.")
        await _until_interrupted()
    return 1 if failed else 0


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
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
