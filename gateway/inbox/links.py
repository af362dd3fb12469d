"""Decision links: a page per emailed link, that decides for the person it was sent to.

A link carries a decision token (minted by the ``decision_links`` activity) bound to the run, the
step, the person and one decision, valid until the step's deadline; the run accepts it once. The
page checks the token (signature with the tenant's key, expiry), shows the step and asks to confirm
(with the step's form when it declares fields); an expired, used or otherwise spent link explains
what happened and offers the inbox. No sign-in is needed: the token is the proof.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.inbox.auth import Person, Session
from gateway.inbox.deps import RUN_DATA_UNREADABLE, InboxState, unanswered, unconfirmed
from gateway.inbox.forms import (
    field_of_message,
    field_views,
    label_of,
    read_form,
    readable_refusal,
    submitted_form,
)
from interpreter.engine import may_decide
from interpreter.state import DecisionKind, PendingApproval, RunStatus
from starter import tokens
from starter.errors import (
    DecisionRefusedError,
    InvalidInputError,
    PendingApprovalsUnknownError,
    RunClosedError,
    RunNotFoundError,
    StarterError,
)
from workflows.decision_tokens import (
    DecisionClaims,
    DecisionVerifier,
    TokenExpiredError,
    TokenRefusedError,
    wait_problem,
)

log = logging.getLogger("gateway.inbox")

Renderer = Callable[..., HTMLResponse]
"""The router's page renderer."""
LINK_DECISIONS = tuple(kind.value for kind in DecisionKind)
"""What a link can decide: approve, reject, complete."""


@dataclass(frozen=True)
class LinkProblem:
    """Why a link cannot decide, for the page."""

    title: str
    message: str
    status_code: int


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK (the private parts dropped)."""
    return {k: v for k, v in private.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


def check_link(state: InboxState, token: str, now: datetime | None = None) -> DecisionClaims | LinkProblem:
    """The claims of a link's token, or why it cannot be used (expired, forged, unknown tenant)."""
    invalid = LinkProblem(
        "This link is not valid", "The link is damaged or was not issued by this service.", 400
    )
    if not token or len(token) > 8192:
        return invalid
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return invalid
    tenant, run, decisions = unverified.get("tenant"), unverified.get("run"), unverified.get("decisions")
    if (
        not isinstance(tenant, str)
        or not isinstance(run, str)
        or not isinstance(decisions, list)
        or len(decisions) != 1
        # A link decides a step; a cancel token (which `wfa token mint` makes) is no link's.
        or decisions[0] not in LINK_DECISIONS
    ):
        return invalid
    key = state.config.signing_key(tenant)
    if key is None:
        return invalid
    # The issuer the worker mints the links' tokens with and verifies decisions against.
    verifier = DecisionVerifier.from_jwks({"keys": [public_jwk(key)]}, tokens.configured_issuer())
    try:
        return verifier.verify(
            token, now=now or datetime.now(UTC), tenant=tenant, run=run, decision=str(decisions[0])
        )
    except TokenExpiredError as err:  # signed by the tenant's key: its time is the one issued
        # (Not told by the refusal's words: they quote a forged token's alg or kid, and its exp
        # then failed the page with a 500: found by a probe.)
        when = f" at {err.expired_at:%Y-%m-%d %H:%M} UTC" if err.expired_at else ""
        return LinkProblem(
            "This link has expired",
            f"The link stopped working{when}. If the step still waits for you, decide it in your inbox.",
            410,
        )
    except TokenRefusedError:
        return invalid


async def link_page(
    request: Request,
    state: InboxState,
    session: Session,
    token: str,
    render: Renderer,
    *,
    submitted: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    top_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The page of a link: the step and a confirmation, or why the link no longer works."""
    claims = check_link(state, token)
    if isinstance(claims, LinkProblem):
        return problem_page(request, state, session, render, claims)
    found = await _pending(state, claims)
    if isinstance(found, LinkProblem):
        return problem_page(request, state, session, render, found)
    status, pending = found
    show_form = claims.decisions[0] in ("approve", "complete")
    return render(
        request,
        state,
        "item.html",
        session,
        status_code=status_code,
        run=claims.run,
        definition=status.definition,
        approval=pending,
        fields=field_views(pending.form, submitted or {}, errors or {}),
        reason=(submitted or {}).get("reason", ""),
        history=[d for d in status.decisions if d.step_id in (pending.path, pending.step_id)],
        top_error=top_error,
        error_count=len(errors or {}) + (1 if top_error else 0),
        allowed=claims.decisions,
        show_form=show_form,
        link_token=token,
        link_actor=claims.actor,
    )


def problem_page(
    request: Request, state: InboxState, session: Session, render: Renderer, problem: LinkProblem
) -> HTMLResponse:
    """Explains why a link does not work and offers the inbox."""
    return render(
        request,
        state,
        "message.html",
        session,
        status_code=problem.status_code,
        title=problem.title,
        message=problem.message,
    )


async def _pending(
    state: InboxState, claims: DecisionClaims
) -> tuple[RunStatus, PendingApproval] | LinkProblem:
    flows = await state.config.clients(claims.tenant)
    try:
        status, pending = await flows.waiting_at(claims.run, claims.step)
    except PendingApprovalsUnknownError:
        return LinkProblem(
            "Cannot tell now",
            "The run could not say just now whether this step still waits. Please try again in a moment.",
            503,
        )
    except RUN_DATA_UNREADABLE as err:  # this gateway's configuration, not the run
        log.error("decision link: %s", err)
        return LinkProblem(
            "Cannot read this run now",
            "This gateway cannot read the run's data now: its settings or its payload store (its log says which)."
            " Please tell your administrator and try again later.",
            503,
        )
    except (RunNotFoundError, InvalidInputError):
        return LinkProblem("Nothing to decide", "The run this link was for no longer exists.", 404)
    except StarterError as err:  # no answer now, or a worker that cannot run the run
        return LinkProblem(*unanswered(err), 503)
    if pending is not None and wait_problem(claims.since, pending.since) is not None:
        pending = None  # it waits again since: the wait this link was mailed for was decided
    if pending is None:
        decided = [d for d in status.decisions if d.accepted and d.step_id in (claims.step, None)]
        done = ""
        if decided:
            last = decided[-1]
            done = (
                f" It was {_past(last.decision)} by {last.actor} on {last.at.strftime('%Y-%m-%d %H:%M UTC')}."
            )
        return LinkProblem(
            "Already decided",
            f"This step no longer waits for a decision, so the link has no use any more.{done}",
            409,
        )
    if not may_decide(pending.approvers, claims.actor):
        return LinkProblem("Not yours to decide", "The step is no longer assigned to you.", 403)
    return status, pending


def _past(kind: DecisionKind) -> str:
    return {"approve": "approved", "reject": "rejected", "complete": "completed"}[kind.value]


async def decide_by_link(request: Request, state: InboxState, session: Session, render: Renderer) -> Response:
    """Sends the link's decision (with the form's data) as the run's ``decide`` update."""
    form = await submitted_form(request)
    token = form.get("t")
    token = token if isinstance(token, str) else ""
    csrf = form.get("csrf")
    if not state.sessions.check_csrf(session, csrf if isinstance(csrf, str) else None):
        return problem_page(
            request,
            state,
            session,
            render,
            LinkProblem("Form expired", "Open the link from your email again.", 400),
        )
    claims = check_link(state, token)
    if isinstance(claims, LinkProblem):
        return problem_page(request, state, session, render, claims)
    found = await _pending(state, claims)
    if isinstance(found, LinkProblem):
        return problem_page(request, state, session, render, found)
    _, pending = found
    submitted = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    # The link's page again, with what was submitted, and why it was not sent.
    again = functools.partial(link_page, request, state, session, token, render, submitted=submitted)
    kind = DecisionKind(claims.decisions[0])
    data, errors = read_form(pending.form, submitted) if kind != DecisionKind.REJECT else ({}, {})
    if errors:
        return await again(errors=errors, status_code=422)
    flows = await state.config.clients(claims.tenant)
    person = Person(claims.tenant, claims.actor)
    from gateway.inbox.router import send_decision

    try:
        await send_decision(
            flows,
            kind,
            claims.run,
            person,
            pending=pending,
            reason=submitted.get("reason", "")[:2000],
            data=data,
            token=token,
            groups=[],
        )
    except DecisionRefusedError as err:
        readable = readable_refusal(err.reason)
        if "used already" in err.reason:
            return problem_page(
                request,
                state,
                session,
                render,
                LinkProblem(
                    "This link was used already",
                    "Each link decides once. Open your inbox to see what waits for you.",
                    409,
                ),
            )
        field = field_of_message(err.reason, pending.form)
        if field is not None:
            return await again(errors={field: f"{label_of(field)} {readable}"}, status_code=422)
        return await again(top_error=f"The run refused: {readable}", status_code=409)
    except InvalidInputError as err:  # text no store keeps (a NUL): was a 500 (an attacker's probe)
        return await again(top_error=f"Not sent: {err}", status_code=422)
    except (RunClosedError, RunNotFoundError):
        return problem_page(
            request, state, session, render, LinkProblem("Already decided", "The run has ended.", 409)
        )
    except StarterError as err:
        return problem_page(request, state, session, render, LinkProblem(*unconfirmed(err)))
    return RedirectResponse(f"{state.prefix}/link/done?{_done_query(kind)}", status_code=303)


def _done_query(kind: DecisionKind) -> str:
    return f"decision={kind.value}"
