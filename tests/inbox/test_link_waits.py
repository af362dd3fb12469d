"""A decision link decides once, and only the wait it was mailed for (found by an attacker's probe).

A step a loop brings back (``on_reject: {"goto": ...}``) waits again and mails new links. Before,
the first email's links still decided it: a token names the run, the step, the person and the
decision, not which wait at the step, and a run that required no proof never looked at the tokens
it had taken, so one reject link decided every pass. Now the links' tokens carry the wait they
were minted for (claim ``since``), the run checks a token it is given whether or not it requires
proof, and the link page says what happened. The links are real: mailed by the run to a local SMTP
server, posted to the inbox served on loopback.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from gateway.inbox.links import LinkProblem, check_link
from interpreter.state import RunInput, RunOptions, RunState
from interpreter.validate import load_definition
from starter import tokens
from starter.errors import DecisionRefusedError
from starter.mailbox import LocalMailbox
from tests.inbox.conftest import Inbox, waiting_run
from tests.workflows.support import definition, eventually, status, unique, wait_state
from workflows import decision_tokens
from workflows.generic import ENGINE_LEVEL, RunDefinitionWorkflow

LOOP = [
    {"id": "n", "type": "set", "vars": {"k": "{{ (vars.k | default(0)) + 1 }}"}, "max_visits": 3},
    {
        "id": "review",
        "type": "approval",
        "approvers": ["alice"],
        "message": "Round {{ vars.k }}",
        "timeout": "1h",
        "on_reject": {"goto": "n"},
        "max_visits": 3,
        "notify": {"email": {"to": {"alice": "alice@acme.example"}, "subject": "Round {{ vars.k }}"}},
    },
]


async def _looping_run(client: Client, task_queue: str, *, proof: bool) -> WorkflowHandle[Any, Any]:
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=load_definition({"name": unique("loop"), "steps": LOOP}),
            options=RunOptions(
                tenant="acme", decision_proof=proof, publish_assignees=True, engine_level=ENGINE_LEVEL
            ),
        ),
        id=unique("loop-run"),
        task_queue=task_queue,
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


async def _links(mailbox: LocalMailbox, subject: str) -> tuple[str, str]:
    """The approve and reject links of the message with ``subject``."""
    mails = await eventually(
        lambda: _received(mailbox, subject), bool, timeout=60, what=f"the email {subject!r}"
    )
    text = mails[0].part("text/plain")
    found = [re.search(rf"^{label}[^:]*: (\S+)$", text, re.MULTILINE) for label in ("Approve", "Reject")]
    assert all(found), text
    return found[0].group(1), found[1].group(1)  # type: ignore[union-attr]


async def _received(mailbox: LocalMailbox, subject: str) -> list[Any]:
    return [m for m in mailbox.received if m.message["Subject"] == subject]


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
"""The CSRF token a page's form carries."""


async def _sign_in_as_alice(web: httpx.AsyncClient, inbox: Inbox) -> None:
    """Signs ``web``'s session in to the inbox as acme's alice (the local sign-in form)."""
    from tests.inbox.conftest import PASSWORD

    login = await web.get(f"{inbox.url}/login")
    found = _CSRF.search(login.text)
    assert found, login.text[:300]
    fields = {"tenant": "acme", "username": "alice", "password": PASSWORD, "csrf": found.group(1)}
    signed_in = await web.post(f"{inbox.url}/login", data=fields)
    assert signed_in.status_code == 303, signed_in.text[:300]


async def _post_link(web: httpx.AsyncClient, link: str, reason: str | bytes) -> httpx.Response:
    """Posts the link's form with ``reason`` (bytes: already urlencoded, sent as they are)."""
    page = await web.get(link)
    csrf = _CSRF.search(page.text)
    assert csrf, f"{page.status_code}: {page.text[:300]}"
    token = link.split("t=", 1)[1]
    url, form = link.split("?", 1)[0], {"t": token, "csrf": csrf.group(1)}
    if isinstance(reason, bytes):
        body = urlencode(form).encode() + b"&reason=" + reason
        return await web.post(
            url, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    return await web.post(url, data={**form, "reason": reason})


@pytest.mark.parametrize("proof", [False, True], ids=["no-proof-required", "proof-required"])
async def test_a_link_decides_once_and_only_the_wait_it_was_mailed_for(
    client: Client, task_queue: str, inbox: Inbox, mailbox: LocalMailbox, proof: bool
) -> None:
    handle = await _looping_run(client, task_queue, proof=proof)
    approve_1, reject_1 = await _links(mailbox, "Round 1")
    async with httpx.AsyncClient(follow_redirects=False) as web:
        rejected = await _post_link(web, reject_1, "not yet")
        assert rejected.status_code == 303, rejected.text[:500]
        approve_2, _ = await _links(mailbox, "Round 2")  # the step waits again: new links
        waiting = await status(handle)
        assert waiting.state == RunState.AWAITING_APPROVAL

        # The first round's reject link, used already: the page says so and the run refuses it.
        again = await web.get(reject_1)
        assert again.status_code == 409
        assert "Already decided" in again.text
        assert "Traceback" not in again.text
        # The first round's approve link, never used: it was for the wait that was decided.
        stale = await web.get(approve_1)
        assert stale.status_code == 409
        assert "Already decided" in stale.text
        # Straight to the run (as a client holding the token would): refused, naming why.
        acme = inbox.clients["acme"]
        stale_token = approve_1.split("t=", 1)[1]
        with pytest.raises(DecisionRefusedError, match="earlier wait at this step"):
            await acme.approve(handle.id, "alice", step_id="review", token=stale_token)
        with pytest.raises(DecisionRefusedError, match="used already"):
            await acme.reject(handle.id, "alice", step_id="review", token=reject_1.split("t=", 1)[1])
        assert (await status(handle)).state == RunState.AWAITING_APPROVAL

        # The second round's link decides the second round.
        approved = await _post_link(web, approve_2, "now")
        assert approved.status_code == 303, approved.text[:500]
    result = await handle.result()
    assert result.state == RunState.COMPLETED
    decided = [(d.decision.value, d.reason) for d in (await status(handle)).decisions if d.accepted]
    assert decided == [("reject", "not yet"), ("approve", "now")]


async def test_a_cancel_token_is_no_link(client: Client, task_queue: str, inbox: Inbox) -> None:
    """``wfa token mint --decisions cancel --step review`` makes a token the link page cannot use:
    it says the link is not valid (before: the page showed the step, and confirming it answered 500)."""
    handle = await waiting_run(client, task_queue, "acme", decision_proof=True)
    token = tokens.mint(
        inbox.private_key, tenant="acme", run=handle.id, actor="alice", decisions=["cancel"], step="review"
    )
    async with httpx.AsyncClient() as web:
        page = await web.get(f"{inbox.url}/link", params={"t": token})
        assert page.status_code == 400
        assert "This link is not valid" in page.text
        posted = await web.post(f"{inbox.url}/link", data={"t": token, "csrf": "x"})
        assert posted.status_code == 400
        assert "Traceback" not in posted.text
    assert (await status(handle)).state == RunState.AWAITING_APPROVAL
    await handle.terminate("test over")


def _forged(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part(header)}.{part(claims)}.c2ln"  # a signature no key made


@pytest.mark.parametrize(
    "header",
    [{"alg": "expired", "typ": "JWT"}, {"alg": "EdDSA", "kid": "expired"}],
    ids=["alg", "kid"],
)
@pytest.mark.parametrize("exp", ["abc", 1e300, -1e20, [1], None], ids=str)
async def test_a_forged_token_naming_expired_is_no_link_and_no_500(
    inbox: Inbox, header: dict[str, Any], exp: Any
) -> None:
    """An attacker without any key: the page read a refusal whose words held "expired" (they quote
    the forged token's alg or kid) as an expiry and turned the token's exp into a date, which
    failed the page (500) or said a forged link had expired in 1970 (found by a probe)."""
    claims = {"tenant": "acme", "run": "x", "decisions": ["approve"], **({"exp": exp} if exp else {})}
    token = _forged(header, claims)
    async with httpx.AsyncClient() as web:
        page = await web.get(f"{inbox.url}/link", params={"t": token})
    assert page.status_code == 400, page.text[:300]
    assert "This link is not valid" in page.text


async def test_a_run_that_requires_no_proof_takes_a_token_it_cannot_verify(
    client: Client, task_queue: str, inbox: Inbox
) -> None:
    """No proof is needed, so a token of a key or issuer the worker does not hold decides as no
    token would (a review: checking it refused the inbox's decisions where the workers hold only an
    identity provider's keys)."""
    handle = await waiting_run(client, task_queue, "acme")
    other, _ = tokens.generate_keys("not-the-workers")
    token = tokens.mint(
        other, tenant="acme", run=handle.id, actor="alice", decisions=["approve"], step="review", issuer="idp"
    )
    await inbox.clients["acme"].approve(handle.id, "alice", step_id="review", token=token)
    assert (await handle.result()).state == RunState.COMPLETED


class _Config:
    def __init__(self, key: dict[str, Any]) -> None:
        self._key = key

    def signing_key(self, tenant: str) -> dict[str, Any]:
        return self._key


class _State:
    def __init__(self, key: dict[str, Any]) -> None:
        self.config = _Config(key)


def test_links_read_with_the_issuer_the_worker_mints_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``WFA_DECISION_ISSUER`` set (a company's identity provider issues the other tokens), the
    worker mints the links' tokens with that issuer; the link page read them with the default
    issuer and called every link damaged."""
    private, _ = tokens.generate_keys("k1")
    monkeypatch.setenv(tokens.ISSUER_ENV, "https://idp.corp.example")
    token = tokens.mint(private, tenant="acme", run="r1", actor="alice", decisions=["approve"], step="s")
    claims = check_link(_State(private), token)  # type: ignore[arg-type]
    assert not isinstance(claims, LinkProblem), claims
    assert (claims.actor, claims.step) == ("alice", "s")
    other = tokens.mint(
        private, tenant="acme", run="r1", actor="alice", decisions=["approve"], step="s", issuer="wfa"
    )
    refused = check_link(_State(private), other)  # type: ignore[arg-type]
    assert isinstance(refused, LinkProblem)
    assert refused.status_code == 400


def test_a_worker_without_keys_still_takes_a_link_once_and_for_its_wait() -> None:
    """A run that requires no proof, on a worker holding no verification keys, checks nothing of a
    token's signature (anyone may decide it); it still refuses a token it took already, and one
    minted for an earlier wait at the step, so a link does not decide twice."""
    private, _ = tokens.generate_keys("k1")
    first = datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC)
    again = first + timedelta(minutes=5)
    token = tokens.mint(
        private, tenant="acme", run="r1", actor="alice", decisions=["reject"], step="review", since=first
    )
    jti = decision_tokens.unverified_jti(token)
    assert jti is not None
    assert decision_tokens.reuse_problem(token, {}, first) is None
    assert decision_tokens.reuse_problem(token, {jti: None}, first) == "token was used already in this run"
    later = decision_tokens.reuse_problem(token, {}, again)
    assert later is not None
    assert "earlier wait at this step" in later
    # A token minted for no particular wait (``wfa token mint``, an identity provider's) serves any.
    plain = tokens.mint(private, tenant="acme", run="r1", actor="alice", decisions=["reject"], step="review")
    assert decision_tokens.reuse_problem(plain, {}, again) is None
    assert decision_tokens.reuse_problem("not a token", {}, again) is None


async def test_a_link_posted_with_a_nul_in_its_reason_is_refused_in_words_and_still_decides(
    client: Client, task_queue: str, inbox: Inbox, mailbox: LocalMailbox
) -> None:
    """The attacker: whoever holds a link (no sign-in) posts a reason holding a NUL character. The
    client refuses it (no store keeps it), and the inbox answered that refusal with a 500 (found
    by an attacker's probe). The page now says why, the run still waits, and the link decides."""
    handle = await _looping_run(client, task_queue, proof=True)
    approve, _ = await _links(mailbox, "Round 1")
    async with httpx.AsyncClient(follow_redirects=False) as web:
        refused = await _post_link(web, approve, "ok\x00then")
        assert refused.status_code == 422, refused.text[:500]
        assert "reason has a NUL character" in refused.text
        assert "Traceback" not in refused.text
        garbled = await _post_link(web, approve, b"ok%E9then")  # Latin-1's é, not UTF-8
        assert garbled.status_code == 400, garbled.text[:500]
        assert "Form not readable" in garbled.text
        assert (await status(handle)).state == RunState.AWAITING_APPROVAL
        approved = await _post_link(web, approve, "ok")
        assert approved.status_code == 303, approved.text[:500]
    assert (await handle.result()).state == RunState.COMPLETED


async def test_a_signed_in_decision_with_a_nul_in_its_reason_is_refused_in_words(
    client: Client, task_queue: str, inbox: Inbox
) -> None:
    """The same through the signed-in inbox's form: it was a 500 too."""
    handle = await waiting_run(client, task_queue, "acme")
    async with httpx.AsyncClient(follow_redirects=False) as web:
        await _sign_in_as_alice(web, inbox)
        page = await web.get(f"{inbox.url}/item", params={"run": handle.id, "step": "review"})
        found = _CSRF.search(page.text)
        assert found, f"{page.status_code}: {page.text[:300]}"
        form = {"run": handle.id, "step": "review", "decision": "approve", "csrf": found.group(1)}
        refused = await web.post(f"{inbox.url}/item", data={**form, "reason": "ok\x00then"})
        assert refused.status_code == 422, refused.text[:500]
        assert "reason has a NUL character" in refused.text
        # Bytes that are not UTF-8 were read as U+FFFD and decided with a reason nobody wrote.
        body = urlencode(form).encode() + b"&reason=ok%FFthen"
        kind = {"content-type": "application/x-www-form-urlencoded"}
        garbled = await web.post(f"{inbox.url}/item", content=body, headers=kind)
        assert garbled.status_code == 400, garbled.text[:500]
        assert "URL-encoded UTF-8 text): nothing was sent" in garbled.text
        # Raw bytes, even UTF-8, and multipart parts were read as Latin-1: "é" became "Ã©".
        raw = await web.post(f"{inbox.url}/item", content=body.replace(b"%FF", "é".encode()), headers=kind)
        assert raw.status_code == 400, raw.text[:500]
        parts = await web.post(f"{inbox.url}/item", data={**form}, files={"reason": (None, b"ok\xffthen")})
        assert parts.status_code == 400, parts.text[:500]
        assert (await status(handle)).state == RunState.AWAITING_APPROVAL
        approved = await web.post(f"{inbox.url}/item", data={**form, "reason": "ok"})
        assert approved.status_code == 303, approved.text[:500]
        query = approved.headers["location"].split("?", 1)[1]
        listed = await web.get(f"{inbox.url}/?{query}")
        assert f"Approved: {handle.id}" in listed.text
        # The banner said any text a link's query held (a probe): it is sealed for the session now.
        forged = await web.get(
            f"{inbox.url}/", params={"decided": "approve", "run": "your account is locked"}
        )
        assert "your account is locked" not in forged.text
        async with httpx.AsyncClient() as stranger:  # another browser: not its banner
            assert "Approved:" not in (await stranger.get(f"{inbox.url}/?{query}")).text
        # Signing out ends the session: a copy of its cookie no longer opens the inbox (a probe).
        kept = dict(web.cookies)
        signed_out = await web.post(f"{inbox.url}/logout", data={"csrf": form["csrf"]})
        assert signed_out.status_code == 303
        async with httpx.AsyncClient(follow_redirects=False, cookies=kept) as replay:
            again = await replay.get(f"{inbox.url}/")
        assert again.status_code == 303, again.text[:300]
        assert "/login" in again.headers["location"]
    assert (await handle.result()).state == RunState.COMPLETED


async def test_data_in_a_message_shows_as_written_not_escaped(
    client: Client, task_queue: str, inbox: Inbox
) -> None:
    """A probe: a webhook field holding ``${secret:PROBE}`` showed in the inbox as
    ``$${secret:PROBE}``, the escape the run keeps data in (data is inert). The page shows the text
    the sender wrote; nothing is resolved."""
    document = definition(
        unique("acme-shown"),
        [{"id": "review", "type": "approval", "approvers": ["alice"], "message": "Pay {{ input.payee }}"}],
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        RunInput(
            definition=load_definition(document),
            input={"payee": "${secret:PROBE}"},
            options=RunOptions(tenant="acme", publish_assignees=True),
        ),
        id=unique("acme-run"),
        task_queue=task_queue,
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    async with httpx.AsyncClient(follow_redirects=False) as web:
        await _sign_in_as_alice(web, inbox)
        listed = await web.get(f"{inbox.url}/")
        page = await web.get(f"{inbox.url}/item", params={"run": handle.id, "step": "review"})
    for shown in (listed.text, page.text):
        assert "Pay ${secret:PROBE}" in shown
        assert "$${secret:" not in shown
    await handle.terminate("test over")
