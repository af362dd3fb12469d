"""The approvals inbox: sign in, see what waits for you, open it, decide.

Server-rendered HTML (jinja2, autoescaped). The signed-in person's tenant comes from the session and
selects the client (its namespace, its runs): nothing of another tenant is listed or opened. Work is
found through the ``WfaAssignees`` search attribute, then each run's ``status`` query says which of
its pending steps the person may decide. A decision is minted a token for the person (the tenant's
signing key, held by the gateway) and sent as the run's validated ``decide`` update; a refusal is
shown with the run's reason, next to the field it names.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from temporalio.service import RPCError

from gateway.inbox.auth import USERNAME_PATTERN, Person, Session
from gateway.inbox.deps import (
    RUN_DATA_UNREADABLE,
    InboxState,
    TenantNotServedError,
    inbox_state,
    unanswered,
    unconfirmed,
)
from gateway.inbox.forms import (
    UnreadableFormError,
    field_of_message,
    field_views,
    label_of,
    read_form,
    readable_refusal,
    submitted_form,
)
from gateway.inbox.oidc import PendingSignIn, SignInRefused
from interpreter.engine import may_decide
from interpreter.inert import as_text
from interpreter.state import DecisionKind, DecisionRecord, PendingApproval, RunStatus
from starter import tokens
from starter.client import FlowClient, runs_query
from starter.errors import (
    DecisionRefusedError,
    InvalidInputError,
    NoWorkerError,
    PayloadUnreadableError,
    PendingApprovalsUnknownError,
    RunClosedError,
    RunNotFoundError,
    ServerUnavailableError,
    StarterError,
)
from starter.payload_store import PayloadStoreError

log = logging.getLogger("gateway.inbox")
COOKIE = "wfa_inbox"
_HERE = Path(__file__).parent
_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter()
State = Annotated[InboxState, Depends(inbox_state)]


@dataclass(frozen=True)
class WorkItem:
    """One pending step the person may decide."""

    run: str
    definition: str
    approval: PendingApproval

    @property
    def title(self) -> str:
        """What the list shows first."""
        return (
            as_text(self.approval.message.splitlines()[0]) if self.approval.message else self.approval.step_id
        )


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


_templates.filters["when"] = _when
# A message or description holding data shows the data as it was written: the run keeps a
# `${secret:` inside data escaped as `$${secret:` (data is inert), which people read as noise
# (found by a probe). Nothing is resolved: it is text on a page.
_templates.filters["text"] = as_text


async def _session(request: Request, state: InboxState) -> Session | None:
    """The request's session, unless its cookie is forged, expired or signed out (in this process,
    or in any process when the sign-outs are stored: :attr:`InboxConfig.ended_sessions`)."""
    session = state.sessions.load(request.cookies.get(COOKIE))
    ended = state.config.ended_sessions
    if (
        session is not None
        and session.person is not None
        and ended is not None
        and await ended.ended(session.csrf)
    ):
        return None
    return session


def _render(
    request: Request,
    state: InboxState,
    name: str,
    session: Session,
    *,
    status_code: int = 200,
    new_cookie: bool = False,
    **context: Any,
) -> HTMLResponse:
    html = _templates.get_template(name).render(
        base=state.prefix,
        person=session.person,
        csrf=state.sessions.csrf_token(session),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"  # a link's token must not travel on
    response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
    if new_cookie:
        _set_cookie(response, state, session)
    return response


async def _message_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    """A page saying ``message``, for an exception handler (the request's session, or a new one)."""
    state = inbox_state(request)
    session = await _session(request, state) or state.sessions.new(None)
    return _render(
        request, state, "message.html", session, status_code=status_code, title=title, message=message
    )


async def tenant_not_served_page(request: Request, exc: Exception) -> HTMLResponse:
    """403, in words, for a person or link of a tenant this inbox does not serve."""
    assert isinstance(exc, TenantNotServedError)
    return await _message_page(
        request,
        403,
        "Not served here",
        f"This inbox does not serve the organisation {exc.tenant[:100]!r}. Use your organisation's own inbox.",
    )


async def unreadable_form_page(request: Request, exc: Exception) -> HTMLResponse:
    """400, in words, for a form the inbox does not read (:func:`submitted_form`): nothing is
    decided, signed in or out."""
    assert isinstance(exc, UnreadableFormError)
    return await _message_page(
        request,
        400,
        "Form not readable",
        "This form did not arrive as the page sends it (URL-encoded UTF-8 text): nothing was sent. Open"
        " the page again and send it from there.",
    )


def _set_cookie(response: Response, state: InboxState, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        state.sessions.dump(session),
        max_age=int(state.sessions.ttl_s),
        path=state.prefix or "/",
        httponly=True,
        samesite="lax",
        secure=state.config.secure_cookies,
    )


def _to_login(state: InboxState, request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{state.prefix}/login?{urlencode({'next': target})}", status_code=303)


def _safe_next(state: InboxState, target: str | None) -> str:
    """Only a path inside the inbox (never another site)."""
    if (
        target
        and target.startswith(state.prefix + "/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return state.prefix + "/"


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------------------- sign-in


@router.get("/login", response_class=HTMLResponse, name="inbox_login")
async def login_page(request: Request, state: State, next: str = "") -> HTMLResponse:
    """The sign-in form."""
    session = await _session(request, state)
    fresh = session is None
    if session is None:
        session = state.sessions.new(None)
    return _render(
        request,
        state,
        "login.html",
        session,
        new_cookie=fresh,
        next=_safe_next(state, next),
        error=None,
        **_sign_in_options(state),
    )


def _sign_in_options(state: InboxState) -> dict[str, Any]:
    return {
        "providers": [client.provider for client in state.oidc.values()],
        "local": state.config.authenticator is not None,
    }


@router.post("/login", name="inbox_login_post")
async def login(request: Request, state: State) -> Response:
    """Checks the credentials; on success a new session (new CSRF secret) for the person."""
    form = await submitted_form(request)
    session = await _session(request, state)
    if not state.sessions.check_csrf(session, _text(form, "csrf")):
        anonymous = state.sessions.new(None)
        return _render(
            request,
            state,
            "login.html",
            anonymous,
            status_code=400,
            new_cookie=True,
            next=_safe_next(state, _text(form, "next")),
            error="Your sign-in form had expired. Please sign in again.",
            **_sign_in_options(state),
        )
    assert session is not None
    authenticator = state.config.authenticator
    if authenticator is None:
        return _render(
            request,
            state,
            "login.html",
            session,
            status_code=404,
            next=_safe_next(state, _text(form, "next")),
            error="Sign-in with a password is off here. Use your organisation's sign-in.",
            **_sign_in_options(state),
        )
    tenant, username = _text(form, "tenant").strip(), _text(form, "username").strip()
    person = await authenticator.authenticate(tenant, username, _text(form, "password"))
    if person is not None and not state.config.serves(person.tenant):
        person = None  # the users file names a tenant the gateway does not serve (a probe: a 500)
    if person is None:
        return _render(
            request,
            state,
            "login.html",
            session,
            status_code=401,
            next=_safe_next(state, _text(form, "next")),
            error="The organisation, user name or password is not right.",
            tenant=tenant,
            username=username,
            **_sign_in_options(state),
        )
    response = RedirectResponse(_safe_next(state, _text(form, "next")), status_code=303)
    _set_cookie(response, state, state.sessions.new(person))
    return response


OIDC_COOKIE = "wfa_inbox_oidc"


def _redirect_uri(request: Request, state: InboxState, provider: str) -> str:
    """The provider's own callback: an answer that comes back to another provider's is refused."""
    return f"{_inbox_url(request, state)}/oidc/callback/{provider}"


def _inbox_url(request: Request, state: InboxState) -> str:
    """The inbox's absolute URL, as providers are told it."""
    return state.config.base_url.rstrip("/") or str(request.base_url).rstrip("/") + state.prefix


async def _problem(
    request: Request, state: InboxState, title: str, message: str, status_code: int
) -> HTMLResponse:
    session = await _session(request, state)
    fresh = session is None
    return _render(
        request,
        state,
        "message.html",
        session or state.sessions.new(None),
        status_code=status_code,
        new_cookie=fresh,
        title=title,
        message=message,
        offer_sign_in=True,
    )


@router.get("/oidc/login", name="inbox_oidc_login")
async def oidc_login(request: Request, state: State, provider: str = "", next: str = "") -> Response:
    """Sends the browser to the provider (authorization code flow, PKCE, state and nonce)."""
    clients = list(state.oidc.values())
    client = state.oidc.get(provider) or (clients[0] if len(clients) == 1 and not provider else None)
    if client is None:
        return await _problem(
            request, state, "Unknown sign-in", "There is no such sign-in service here.", 404
        )
    try:
        url, pending = await client.begin(
            _redirect_uri(request, state, client.provider.key), _safe_next(state, next)
        )
    except SignInRefused as err:
        return await _problem(request, state, "Sign-in is not available", err.message, err.status_code)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        state.sessions.seal("oidc", asdict(pending)),
        max_age=int(pending.expires - time.time()),
        path=state.prefix or "/",
        httponly=True,
        samesite="lax",  # the provider's redirect back is a top-level GET: the cookie comes along
        secure=state.config.secure_cookies,
    )
    return response


@router.get("/oidc/callback", name="inbox_oidc_callback_shared")
async def oidc_callback_shared(request: Request, state: State) -> Response:
    """The callback once shared by all providers: an answer here cannot say whose it is."""
    response = await _problem(
        request,
        state,
        "You are not signed in",
        "This sign-in came back to an address that does not name its sign-in service (the"
        " administrator registers <inbox>/oidc/callback/<provider> now). Please sign in again.",
        400,
    )
    response.delete_cookie(OIDC_COOKIE, path=state.prefix or "/")
    return response


@router.get("/oidc/callback/{provider}", name="inbox_oidc_callback")
async def oidc_callback(request: Request, state: State, provider: str) -> Response:
    """Where ``provider`` sends the browser back: checks everything, then signs the person in.

    The answer is taken for ``provider``'s (its code goes only to its token endpoint) and must
    belong to a sign-in started with it: against the mix-up attack, where another provider sends
    the browser to this one with the person's state.
    """
    client = state.oidc.get(provider)
    if client is None:
        return await _problem(
            request, state, "Unknown sign-in", "There is no such sign-in service here.", 404
        )
    sealed = state.sessions.unseal("oidc", request.cookies.get(OIDC_COOKIE))
    pending = None
    if sealed is not None:
        try:
            pending = PendingSignIn(**sealed)
        except TypeError:
            pending = None
    started = state.oidc.get(pending.provider) if pending is not None else None
    params = dict(request.query_params.items())
    try:
        person = await client.finish(
            params,
            pending,
            _redirect_uri(request, state, provider),
            started.provider.name if started is not None else "",
        )
    except SignInRefused as err:
        response = await _problem(request, state, "You are not signed in", err.message, err.status_code)
        response.delete_cookie(OIDC_COOKIE, path=state.prefix or "/")
        return response
    if not state.config.serves(person.tenant):  # a provider naming any tenant (a probe: a 500)
        response = await _problem(
            request,
            state,
            "You are not signed in",
            f"This inbox does not serve the organisation {person.tenant[:100]!r}.",
            403,
        )
        response.delete_cookie(OIDC_COOKIE, path=state.prefix or "/")
        return response
    assert pending is not None
    signed_in = RedirectResponse(_safe_next(state, pending.next), status_code=303)
    signed_in.delete_cookie(OIDC_COOKIE, path=state.prefix or "/")  # a sign-in is finished once
    _set_cookie(signed_in, state, state.sessions.new(person, provider=client.provider.key))
    return signed_in


@router.post("/logout", name="inbox_logout")
async def logout(request: Request, state: State) -> Response:
    """Ends the session; for a person the provider signed in, also the provider's session
    (OpenID Connect RP-Initiated Logout, when the provider advertises ``end_session_endpoint``):
    the browser goes to the provider, which sends it back to the sign-in page."""
    form = await submitted_form(request)
    session = await _session(request, state)
    response = RedirectResponse(f"{state.prefix}/login", status_code=303)
    if not state.sessions.check_csrf(session, _text(form, "csrf")):
        return response
    assert session is not None
    client = state.oidc.get(session.provider)
    if client is not None:
        login = f"{_inbox_url(request, state)}/login"
        with contextlib.suppress(SignInRefused):  # the provider is away: the local session still ends
            url = await client.end_session_url(login)
            if url is not None:
                response = RedirectResponse(url, status_code=303)
    response.delete_cookie(COOKIE, path=state.prefix or "/")
    state.sessions.end(session)  # a copy of the cookie no longer signs anyone in
    # Nor in another gateway process, or a restarted one: a person's session only (anyone may
    # sign out a session of nobody, which would have stored rows without end: a review).
    if state.config.ended_sessions is not None and session.person is not None:
        await state.config.ended_sessions.end(session.csrf, session.expires)
    return response


# ------------------------------------------------------------------------------------ the list


def _assignee_clause(person: Person) -> str | None:
    values = [v for v in person.assignee_values if USERNAME_PATTERN.match(v.split(":", 1)[1])]
    if not values:
        return None
    return "(" + " OR ".join(f"WfaAssignees = '{v}'" for v in values) + ")"


FIND_WORK_S = 30.0
"""How long the list asks runs for their status; the runs left are counted as not answering."""


@dataclass
class Work:
    """What :func:`find_work` found: the steps, and how many runs that may hold some did not answer."""

    items: list[WorkItem]
    unanswered: int = 0


async def find_work(flows: FlowClient, person: Person, limit: int) -> Work:
    """The pending steps ``person`` may decide, across the tenant's running runs.

    Found through the ``WfaAssignees`` search attribute (visibility is eventually consistent: a
    step decided a moment ago may still be listed, so each run's status confirms what is pending).
    A run that does not answer (no worker within the query's 10 s, or a worker that cannot run
    it) is counted in :attr:`Work.unanswered`; so is every later run of a task queue no worker
    polls any more, unasked, and every run left once :data:`FIND_WORK_S` have passed: before,
    each one took the query's 10 s to be skipped without a word (an attacker's probe: "Nothing is
    waiting for you" after minutes), and a run its worker could not replay was skipped as ended
    (a review).

    Raises:
        ServerUnavailableError: Temporal cannot be reached.
        PayloadUnreadableError: This gateway cannot read the runs' data.
    """
    clause = _assignee_clause(person)
    if clause is None:
        return Work([])
    query = f"{runs_query(person.tenant)} AND ExecutionStatus = 'Running' AND {clause}"
    work = Work([])
    silent: set[str] = set()  # task queues no worker polls
    deadline = time.monotonic() + FIND_WORK_S
    async for execution in flows.client.list_workflows(query, limit=limit):
        if execution.task_queue in silent or time.monotonic() > deadline:
            work.unanswered += 1
            continue
        try:
            status = await flows.status(execution.id)
        except (PayloadUnreadableError, ServerUnavailableError):
            raise  # this gateway's configuration or the service: every run would vanish from the list
        except (RunNotFoundError, RunClosedError):
            continue  # ended meanwhile: not work any more
        except StarterError as err:  # no worker answered, or its worker cannot run it
            work.unanswered += 1
            if (
                isinstance(err, NoWorkerError)
                and not err.task_failing
                and not await flows.worker_polls(execution.task_queue)
            ):
                silent.add(execution.task_queue)
            continue
        for approval in await flows.every_pending_approval(execution.id, status):
            if may_decide(approval.approvers, person.username, person.groups):
                work.items.append(WorkItem(execution.id, status.definition, approval))
    work.items.sort(
        key=lambda item: (item.approval.deadline is None, item.approval.deadline, item.approval.since)
    )
    return work


@router.get("/", response_class=HTMLResponse, name="inbox_list")
async def inbox(request: Request, state: State, done: str = "") -> Response:
    """What waits for the signed-in person; ``done``: the decision just sent, sealed for this
    session (:func:`_done_url`)."""
    session = await _session(request, state)
    if session is None or session.person is None:
        return _to_login(state, request)
    person = session.person
    flows = await state.config.clients(person.tenant)
    try:
        work = await find_work(flows, person, state.config.list_limit)
    except RPCError as err:  # the server is down, or the search attributes are not registered
        return _unavailable(
            request,
            state,
            session,
            "The inbox cannot look for your work now",
            f"The workflow service answered: {err.message[:300]}. Please try again later.",
        )
    except ServerUnavailableError as err:
        return _unavailable(request, state, session, *unanswered(err))
    except RUN_DATA_UNREADABLE as err:
        return _unreadable(request, state, session, err)
    sent = state.sessions.unseal("done", done or None)
    banner = None
    if sent is not None and sent.get("c") == session.csrf and sent.get("d") in DONE:
        banner = f"{DONE[sent['d']]}: {sent.get('r', '')}"
    return _render(
        request,
        state,
        "inbox.html",
        session,
        # Nothing listed because runs did not answer is not "nothing waits": 503, try again.
        status_code=503 if work.unanswered and not work.items else 200,
        items=work.items,
        unanswered=work.unanswered,
        done=banner,
    )


def _done_url(state: InboxState, session: Session, decision: str, run: str) -> str:
    """The list's address after a decision, its banner sealed for the session: the banner said
    whatever text ``?decided=approve&run=...`` held, a link anyone could send (found by a probe)."""
    sealed = state.sessions.seal("done", {"d": decision, "r": run, "c": session.csrf})
    return f"{state.prefix}/?{urlencode({'done': sealed})}"


# ------------------------------------------------------------------------------------- one item


def _step_decisions(status: RunStatus, approval_path: str, step_id: str) -> list[DecisionRecord]:
    return [d for d in status.decisions if d.step_id in (approval_path, step_id)]


async def _item_context(flows: FlowClient, run: str, step: str) -> tuple[RunStatus, PendingApproval | None]:
    return await flows.waiting_at(run, step)


def _unavailable(
    request: Request, state: InboxState, session: Session, title: str, message: str
) -> HTMLResponse:
    """A page saying the inbox cannot answer now (503), and why."""
    return _render(request, state, "message.html", session, status_code=503, title=title, message=message)


def _unreadable(
    request: Request, state: InboxState, session: Session, err: PayloadUnreadableError | PayloadStoreError
) -> HTMLResponse:
    """A run this gateway cannot read (no payload store or no key where the worker has them, a store
    of another kind, a stored payload missing or its store unreachable): 503, and the operator's log
    line saying what to set or restore; never "nothing here" or a bare 500."""
    log.error("inbox: %s", err)
    return _unavailable(
        request,
        state,
        session,
        "The inbox cannot read your work now",
        "This gateway cannot read the runs' data now: its settings or its payload store (its log says which)."
        " Please tell your administrator and try again later.",
    )


def _not_found(request: Request, state: InboxState, session: Session) -> HTMLResponse:
    return _render(
        request,
        state,
        "message.html",
        session,
        status_code=404,
        title="Nothing here",
        message="There is no such step waiting in your organisation.",
    )


@router.get("/item", response_class=HTMLResponse, name="inbox_item")
async def item(request: Request, state: State, run: str = "", step: str = "") -> Response:
    """One pending step: its context, its history of escalations and decisions, the form."""
    session = await _session(request, state)
    if session is None or session.person is None:
        return _to_login(state, request)
    return await _item_page(request, state, session, run, step)


async def _item_page(
    request: Request,
    state: InboxState,
    session: Session,
    run: str,
    step: str,
    *,
    submitted: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    top_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    submitted = submitted or {}
    errors = errors or {}
    person = session.person
    assert person is not None
    flows = await state.config.clients(person.tenant)
    try:
        status, pending = await _item_context(flows, run, step)
    except PendingApprovalsUnknownError:
        return _unavailable(
            request,
            state,
            session,
            "The inbox cannot tell whether this step waits now",
            "The run has more waiting than one answer holds, and it could not list them just now"
            " (its worker may be being upgraded). Please try again in a moment.",
        )
    except RUN_DATA_UNREADABLE as err:
        return _unreadable(request, state, session, err)
    except (RunNotFoundError, InvalidInputError):
        return _not_found(request, state, session)
    except StarterError as err:  # no answer now, or a worker that cannot run the run
        return _unavailable(request, state, session, *unanswered(err))
    if pending is None:
        decisions = [
            d for d in status.decisions if d.accepted and d.step_id in (step, step.rsplit(".", 1)[-1])
        ]
        # (A status answer may list only the most recent step records: a review found a step
        # decided in a run of 500 tasks shown as "nothing here".)
        ever = any(r.path == step for r in status.steps) or bool(decisions) or status.steps_dropped > 0
        if not ever:
            return _not_found(request, state, session)
        last = decisions[-1] if decisions else None
        message = "This step is no longer waiting for a decision."
        if last is not None:
            message += f" It was {DONE[last.decision.value].lower()} by {last.actor}."
        return _render(
            request,
            state,
            "message.html",
            session,
            status_code=409 if status_code != 200 else 200,
            title="Already decided",
            message=message,
        )
    if not may_decide(pending.approvers, person.username, person.groups):
        return _render(
            request,
            state,
            "message.html",
            session,
            status_code=403,
            title="Not yours to decide",
            message="You are not among the approvers of this step.",
        )
    return _render(
        request,
        state,
        "item.html",
        session,
        status_code=status_code,
        run=run,
        definition=status.definition,
        approval=pending,
        fields=field_views(pending.form, submitted, errors),
        reason=submitted.get("reason", ""),
        history=_step_decisions(status, pending.path, pending.step_id),
        top_error=top_error,
        allowed=("complete",) if pending.kind == "task" else ("approve", "reject"),
        show_form=True,
        link_token=None,
        error_count=len(errors) + (1 if top_error else 0),
    )


@router.post("/item", name="inbox_decide")
async def decide(request: Request, state: State) -> Response:
    """Sends the person's decision as the run's validated ``decide`` update, with a token."""
    form = await submitted_form(request)
    session = await _session(request, state)
    if session is None or session.person is None:
        return _to_login(state, request)
    if not state.sessions.check_csrf(session, _text(form, "csrf")):
        return _render(
            request,
            state,
            "message.html",
            session,
            status_code=400,
            title="Form expired",
            message="This form is no longer valid. Open the step again from your inbox.",
        )
    person = session.person
    run, step = _text(form, "run"), _text(form, "step")
    submitted = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    # The step's page again, with what was submitted, and why it was not sent.
    again = functools.partial(_item_page, request, state, session, run, step, submitted=submitted)
    choice = _text(form, "decision")
    if choice not in ("approve", "reject", "complete"):
        return await again(top_error="Choose what you decide.", status_code=422)
    kind = DecisionKind(choice)
    flows = await state.config.clients(person.tenant)
    try:
        _, pending = await _item_context(flows, run, step)
    except RUN_DATA_UNREADABLE as err:
        return _unreadable(request, state, session, err)
    except (RunNotFoundError, InvalidInputError):
        return _not_found(request, state, session)
    except StarterError as err:  # as the step's page (a review: a 404 where the page said 503)
        return _unavailable(request, state, session, *unanswered(err))
    if pending is None or not may_decide(pending.approvers, person.username, person.groups):
        return await again(status_code=409)
    data, errors = read_form(pending.form, submitted)
    if errors:
        return await again(errors=errors, status_code=422)
    key = state.config.signing_key(person.tenant)
    groups = [g for g in person.groups if f"group:{g}" in pending.approvers]
    token = None
    if key is not None:
        token = tokens.mint(
            key,
            tenant=person.tenant,
            run=run,
            actor=person.username,
            decisions=[kind.value],
            step=pending.path,
            ttl_s=state.config.decision_ttl_s,
            groups=groups,
            since=pending.since,
        )
    try:
        await send_decision(
            flows,
            kind,
            run,
            person,
            pending=pending,
            reason=submitted.get("reason", "")[:2000],
            data=data,
            token=token,
            groups=groups,
        )
    except DecisionRefusedError as err:
        message = err.reason
        field = field_of_message(message, pending.form)
        readable = readable_refusal(message)
        if field is not None:
            at_field = {field: f"{label_of(field)} {readable}"}
            return await again(errors=at_field, status_code=422)
        return await again(top_error=f"The run refused: {readable}", status_code=409)
    except InvalidInputError as err:  # text no store keeps (a NUL): was a 500 (an attacker's probe)
        return await again(top_error=f"Not sent: {err}", status_code=422)
    except (RunClosedError, RunNotFoundError):
        return await again(status_code=409)
    except StarterError as err:
        title, message, status_code = unconfirmed(err)
        return _render(
            request, state, "message.html", session, status_code=status_code, title=title, message=message
        )
    return RedirectResponse(_done_url(state, session, kind.value, run), status_code=303)


async def send_decision(
    flows: FlowClient,
    kind: DecisionKind,
    run: str,
    person: Person,
    *,
    pending: PendingApproval,
    reason: str,
    data: dict[str, Any],
    token: str | None,
    groups: list[str],
) -> None:
    """The decision as the run's ``decide`` update (approve, reject, or complete a task)."""
    if kind == DecisionKind.COMPLETE:
        await flows.complete_task(
            run, person.username, step_id=pending.path, comment=reason, data=data, token=token, groups=groups
        )
        return
    decide_ = flows.approve if kind == DecisionKind.APPROVE else flows.reject
    await decide_(
        run, person.username, step_id=pending.path, reason=reason, data=data, token=token, groups=groups
    )


DONE = {"approve": "Approved", "reject": "Rejected", "complete": "Completed"}


async def _link_session(request: Request, state: InboxState) -> tuple[Session, bool]:
    session = await _session(request, state)
    if session is None:
        return state.sessions.new(None), True
    return session, False


@router.get("/link", response_class=HTMLResponse, name="inbox_link")
async def link(request: Request, state: State, t: str = "") -> Response:
    """An emailed decision link: the step and a confirmation, or why the link no longer works."""
    from gateway.inbox.links import link_page

    session, fresh = await _link_session(request, state)
    response = await link_page(request, state, session, t, _render)
    if fresh:
        _set_cookie(response, state, session)
    return response


@router.post("/link", name="inbox_link_decide")
async def link_decide(request: Request, state: State) -> Response:
    """Decides through a link (the token is the proof; no sign-in)."""
    from gateway.inbox.links import decide_by_link

    session, _ = await _link_session(request, state)
    return await decide_by_link(request, state, session, _render)


@router.get("/link/done", response_class=HTMLResponse, name="inbox_link_done")
async def link_done(request: Request, state: State, decision: str = "") -> Response:
    """After a link decided."""
    session, fresh = await _link_session(request, state)
    verb = DONE.get(decision, "Done")
    return _render(
        request,
        state,
        "message.html",
        session,
        new_cookie=fresh,
        title=f"{verb} — thank you",
        message=f"{verb}. The run goes on with your decision.",
    )


@router.get("/static/inbox.css", name="inbox_css")
async def css() -> Response:
    """The inbox's stylesheet."""
    return Response(
        (_HERE / "static" / "inbox.css").read_text(encoding="utf-8"),
        media_type="text/css",
        headers={"Cache-Control": "max-age=3600"},
    )
