"""Decisions carry proof: forged, expired, replayed-elsewhere and wrong-step tokens refused over the
four paths (the project's client, ``wfa``, a raw signal, a raw update) with nothing written to
history; a valid token accepted; key rotation; approve/reject races at one decision each.

The worker here runs in this process, so the verifier configured in ``workflows.decision_tokens`` is
the one its validators call (as ``worker.py`` configures it from ``WFA_DECISION_KEYS``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.worker import Worker

from interpreter.state import (
    CancelRunRequest,
    DecisionKind,
    DecisionRequest,
    RunInput,
    RunOptions,
    RunState,
    RunStatus,
)
from interpreter.validate import load_definition
from starter.client import FlowClient
from starter.errors import DecisionRefusedError, InvalidInputError
from starter.tokens import generate_keys, merge_jwks, mint
from tests.helpers.wfa_process import run_wfa, wfa_env
from tests.workflows.support import definition, eventually, status, unique, wait_state
from workflows import decision_tokens
from workflows.generic import PROOF_REQUIRED, RunDefinitionWorkflow

TENANT = "acme"
WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}

Handle = WorkflowHandle[Any, Any]


@dataclass
class Keys:
    old_private: dict[str, Any]
    new_private: dict[str, Any]
    jwks_path: Path
    private_path: Path


@pytest_asyncio.fixture(loop_scope="session")
async def keys(tmp_path: Path) -> AsyncIterator[Keys]:
    """Two keys in the worker's key set (the old one still listed: a rotation in progress)."""
    old_private, old_public = generate_keys("old-key")
    new_private, new_public = generate_keys("new-key")
    jwks = merge_jwks(new_public, old_public)
    jwks_path, private_path = tmp_path / "jwks.json", tmp_path / "signing.jwk"
    jwks_path.write_text(json.dumps(jwks))
    private_path.write_text(json.dumps(new_private))
    decision_tokens.configure(decision_tokens.DecisionVerifier.from_jwks(jwks))
    yield Keys(old_private, new_private, jwks_path, private_path)
    decision_tokens.configure(None)


def _approval(name: str, *, stay_open: bool = False) -> dict[str, Any]:
    review: dict[str, Any] = {
        "id": "review",
        "type": "approval",
        "approvers": ["alice", "bob"],
        "timeout": "1h",
    }
    after: dict[str, Any] = {"id": "after", "type": "set", "vars": {"done": True}}
    if stay_open:  # the run stays open after the decision: a losing decision meets the validator
        review["on_reject"] = "continue"
        after = {"id": "after", "type": "delay", "duration": "1h"}
    return definition(name, [review, after])


async def _start(client: Client, task_queue: str, *, proof: bool = True, stay_open: bool = False) -> Handle:
    document = _approval(unique("proof"), stay_open=stay_open)
    run = RunInput(
        definition=load_definition(document),
        options=RunOptions(tenant=TENANT, decision_proof=proof),
    )
    handle = await client.start_workflow(
        RunDefinitionWorkflow.run,
        run,
        id=unique(str(document["name"])),
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=5),
    )
    await wait_state(handle, RunState.AWAITING_APPROVAL)
    return handle


async def _history(handle: Handle) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


def _claims(run: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "wfa",
        "sub": "alice",
        "tenant": TENANT,
        "run": run,
        "step": "review",
        "decisions": ["approve", "reject"],
        "iat": now,
        "exp": now + 600,
        "jti": unique("jti"),
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(private: dict[str, Any], claims: dict[str, Any], kid: str | None = None) -> str:
    key = jwt.PyJWK.from_dict(private)
    return jwt.encode(claims, key.key, algorithm="EdDSA", headers={"kid": kid or private["kid"]})


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token built by hand (PyJWT refuses to use a public key as an HMAC secret: the
    attacker of an algorithm confusion does not)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


@dataclass
class Attempt:
    """One forged or wrong decision: what it is, the request's actor and kind, and its token."""

    name: str
    actor: str
    kind: str  # approve, reject or cancel
    token: str | None


def _attempts(keys: Keys, run: str) -> list[Attempt]:
    stranger, _ = generate_keys("new-key")  # same kid as a trusted key, another secret
    unknown, _ = generate_keys("unknown-key")
    public = json.dumps({k: v for k, v in keys.new_private.items() if k != "d"})
    now = int(time.time())
    good = keys.new_private
    return [
        Attempt("forged signature", "alice", "approve", _sign(stranger, _claims(run))),
        Attempt("unknown kid", "alice", "approve", _sign(unknown, _claims(run))),
        Attempt(
            "alg none",
            "alice",
            "approve",
            jwt.encode(_claims(run), None, algorithm="none", headers={"kid": "new-key"}),
        ),
        Attempt(
            "HS256 with the public key",
            "alice",
            "approve",
            _hs256(_claims(run), public.encode(), "new-key"),
        ),
        Attempt("expired", "alice", "approve", _sign(good, _claims(run, iat=now - 7200, exp=now - 3600))),
        Attempt(
            "not yet valid", "alice", "approve", _sign(good, _claims(run, iat=now + 3600, exp=now + 7200))
        ),
        Attempt("other run", "alice", "approve", _sign(good, _claims(f"{run}-other"))),
        Attempt("other step", "alice", "approve", _sign(good, _claims(run, step="publish"))),
        Attempt("other tenant", "alice", "approve", _sign(good, _claims(run, tenant="globex"))),
        Attempt("other issuer", "alice", "approve", _sign(good, _claims(run, iss="evil"))),
        Attempt("decision not allowed", "alice", "approve", _sign(good, _claims(run, decisions=["reject"]))),
        Attempt(
            "actor not an approver",
            "mallory",
            "approve",
            _sign(good, _claims(run, sub="mallory")),
        ),
        Attempt("token of another actor", "alice", "reject", _sign(good, _claims(run, sub="bob"))),
        Attempt("missing token", "alice", "approve", None),
        Attempt("garbage token", "alice", "reject", "not.a.jwt"),
        Attempt("huge token", "alice", "approve", "e" * 200_000),
        Attempt("cancel without a token", "alice", "cancel", None),
        Attempt(
            "cancel with a forged token",
            "alice",
            "cancel",
            _sign(stranger, _claims(run, step=None, decisions=["cancel"])),
        ),
        Attempt(
            "cancel not allowed by the token",
            "alice",
            "cancel",
            _sign(good, _claims(run, step=None, decisions=["approve"])),
        ),
    ]


async def _via_client(flows: FlowClient, handle: Handle, attempt: Attempt) -> str:
    async def send() -> Any:
        if attempt.kind == "cancel":
            return await flows.cancel(handle.id, attempt.actor, token=attempt.token)
        decide = flows.approve if attempt.kind == "approve" else flows.reject
        return await decide(handle.id, attempt.actor, step_id="review", token=attempt.token)

    # A token longer than any worker takes is bad input to the client: not sent at all.
    expected = InvalidInputError if attempt.name == "huge token" else DecisionRefusedError
    with pytest.raises(expected) as refused:
        await send()
    return str(refused.value)


async def _via_update(handle: Handle, attempt: Attempt) -> str:
    async def send() -> Any:
        if attempt.kind == "cancel":
            request = CancelRunRequest(actor=attempt.actor, token=attempt.token)
            return await handle.execute_update(RunDefinitionWorkflow.cancel_run, request)
        decision = DecisionRequest(
            decision=DecisionKind(attempt.kind), actor=attempt.actor, step_id="review", token=attempt.token
        )
        return await handle.execute_update(RunDefinitionWorkflow.decide, decision)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await send()
    return str(getattr(refused.value.cause, "message", refused.value))


async def _refused_without_history(handle: Handle, send: Callable[[], Any], attempt: Attempt) -> str:
    before = len(await _history(handle))
    message = await send()
    after = len(await _history(handle))
    assert after == before, f"{attempt.name}: the refusal wrote {after - before} history events"
    assert len(message) < 2000, f"{attempt.name}: the refusal echoes its input"
    return message


async def test_forged_decisions_refused_over_client_and_update_with_nothing_in_history(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    handle = await _start(client, task_queue)
    flows = FlowClient(client, task_queue=task_queue, tenant=TENANT)
    attempts = _attempts(keys, handle.id)
    refused = 0
    for _ in range(4):
        for attempt in attempts:
            message = await _refused_without_history(
                handle, lambda a=attempt: _via_client(flows, handle, a), attempt
            )
            assert message, attempt.name
            message = await _refused_without_history(
                handle, lambda a=attempt: _via_update(handle, a), attempt
            )
            assert message, attempt.name
            refused += 2
    # Each refusal names its reason.
    reasons = {a.name: await _via_update(handle, a) for a in attempts}
    assert "signature is not valid" in reasons["forged signature"]
    assert "not known" in reasons["unknown kid"]
    assert "'none' is not accepted" in reasons["alg none"]
    assert "'HS256' is not accepted" in reasons["HS256 with the public key"]
    assert "expired" in reasons["expired"]
    assert "not valid yet" in reasons["not yet valid"]
    assert "another run" in reasons["other run"]
    assert "step 'publish'" in reasons["other step"]
    assert "another tenant" in reasons["other tenant"]
    assert "issuer" in reasons["other issuer"]
    assert "does not allow approve" in reasons["decision not allowed"]
    assert "'mallory' may not decide" in reasons["actor not an approver"]
    assert "for the actor 'bob'" in reasons["token of another actor"]
    assert "must carry a decision token" in reasons["missing token"]
    assert "not a JWT" in reasons["garbage token"]
    assert "characters long" in reasons["huge token"]
    assert "must carry a decision token" in reasons["cancel without a token"]
    assert "signature is not valid" in reasons["cancel with a forged token"]
    assert "does not allow cancel" in reasons["cancel not allowed by the token"]
    refused += len(attempts)

    now = await status(handle)
    assert now.state == RunState.AWAITING_APPROVAL
    assert [d for d in now.decisions if d.accepted] == []
    assert now.cancelled_by is None
    print(f"forged decisions refused (client + raw update): {refused}")
    assert refused >= 4 * 2 * 19 + 19

    # A valid token is accepted, once: the same token again is refused.
    token = mint(
        keys.new_private, tenant=TENANT, run=handle.id, actor="bob", decisions=["approve"], step="review"
    )
    record = await flows.approve(handle.id, "bob", step_id="review", token=token)
    assert record is not None
    assert (record.actor, record.accepted) == ("bob", True)
    result = await handle.result()
    assert result.state == RunState.COMPLETED


def _refusals(now: RunStatus) -> int:
    refused = [d for d in now.decisions if not d.accepted]
    return len(refused) + now.decisions_dropped + len(now.refused_messages) + now.refused_messages_dropped


async def test_signals_refused_when_the_run_requires_proof(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    handle = await _start(client, task_queue)
    good = mint(
        keys.new_private, tenant=TENANT, run=handle.id, actor="alice", decisions=["approve"], step="review"
    )
    sent = 0
    for index in range(60):
        before = await _history(handle)
        if index % 4 == 0:
            await handle.signal("approve", {"actor": "alice", "step_id": "review"})
        elif index % 4 == 1:
            await handle.signal("reject", {"actor": "bob", "step_id": "review"})
        elif index % 4 == 2:
            await handle.signal("approve", {"actor": "alice", "step_id": "review", "token": good})
        else:
            await handle.signal("cancel", {"actor": "alice"})
        sent += 1
        await eventually(lambda: status(handle), lambda now, n=sent: _refusals(now) == n, what="the refusal")
        # Temporal records a signal before the workflow sees it; the run records only the refusal:
        # no update, no activity, no timer, no search attribute changes.
        await wait_state(handle, RunState.AWAITING_APPROVAL)
        new = (await _history(handle))[len(before) :]
        kinds = {e.event_type for e in new}
        assert kinds <= WORKFLOW_TASK_EVENTS | {EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED}, kinds
    now = await status(handle)
    assert now.state == RunState.AWAITING_APPROVAL
    assert [d for d in now.decisions if d.accepted] == []
    assert now.cancelled_by is None
    refusals = [d.refusal for d in now.decisions] + [m.reason for m in now.refused_messages]
    assert PROOF_REQUIRED in refusals
    assert any("token" in r and "malformed" in r for r in refusals if r)
    print(f"forged signals refused: {sent}")
    await handle.terminate("test over")


async def test_wfa_refuses_forged_tokens_and_accepts_a_minted_one(
    client: Client, task_queue: str, worker: Worker, keys: Keys, tmp_path: Path
) -> None:
    handle = await _start(client, task_queue)
    env = wfa_env(
        client.service_client.config.target_host,
        task_queue,
        WFA_TENANT=TENANT,
        WFA_DECISION_SIGNING_KEY=str(keys.private_path),
    )
    refused = 0
    for attempt in _attempts(keys, handle.id):
        verb = attempt.kind
        args = [verb, handle.id, "--actor", attempt.actor]
        if verb != "cancel":
            args += ["--step", "review"]
        if attempt.token is not None and len(attempt.token) < 100_000:  # argv has a size limit
            args += ["--token", attempt.token]
        before = len(await _history(handle))
        done = await run_wfa(*args, env=env)
        assert done.clean, done.describe()
        assert done.code == 5, (attempt.name, done.describe())
        assert len(await _history(handle)) == before, attempt.name
        refused += 1
    print(f"forged decisions refused (wfa): {refused}")

    minted = await run_wfa(
        "token", "mint", "--run", handle.id, "--step", "review", "--actor", "alice",
        "--decisions", "approve,reject", "--ttl", "10m", env=env,
    )  # fmt: skip
    assert minted.code == 0, minted.describe()
    token = minted.out.strip()
    done = await run_wfa(
        "approve", handle.id, "--actor", "alice", "--step", "review", "--token", token, env=env
    )
    assert done.code == 0, done.describe()
    assert (await handle.result()).state == RunState.COMPLETED


async def test_key_rotation_keeps_tokens_of_the_old_key_valid(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    handle = await _start(client, task_queue)
    old = mint(
        keys.old_private, tenant=TENANT, run=handle.id, actor="alice", decisions=["approve"], step="review"
    )
    request = DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", step_id="review", token=old)
    record = await handle.execute_update(RunDefinitionWorkflow.decide, request)
    assert record.accepted
    assert (await handle.result()).state == RunState.COMPLETED


async def test_a_token_proves_one_decision_and_a_valid_cancel_is_accepted(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    handle = await _start(client, task_queue)

    def cancel_token() -> str:
        return mint(
            keys.new_private, tenant=TENANT, run=handle.id, actor="alice", decisions=["cancel"], ttl_s=600
        )

    token = cancel_token()
    recorded = await handle.execute_update(
        RunDefinitionWorkflow.cancel_run,
        CancelRunRequest(actor="alice", reason="no longer needed", token=token),
    )
    assert recorded.actor == "alice"
    assert "token" not in recorded.model_dump()  # the status keeps no token
    before = len(await _history(handle))
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await handle.execute_update(
            RunDefinitionWorkflow.cancel_run, CancelRunRequest(actor="alice", token=token)
        )
    assert "used already" in str(getattr(again.value.cause, "message", ""))
    assert len(await _history(handle)) == before
    # Asking again (while the run waits for Temporal's cancellation) takes a token of its own.
    await handle.execute_update(
        RunDefinitionWorkflow.cancel_run, CancelRunRequest(actor="alice", token=cancel_token())
    )
    await handle.cancel()


async def test_worker_setting_requires_proof_even_when_the_run_does_not(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    handle = await _start(client, task_queue, proof=False)
    verifier = decision_tokens.verifier()
    assert verifier is not None
    verifier.required = True
    try:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                RunDefinitionWorkflow.decide,
                DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", step_id="review"),
            )
        assert "must carry a decision token" in str(getattr(refused.value.cause, "message", ""))
    finally:
        verifier.required = False
    # Without either setting a run decides as before (no token).
    record = await handle.execute_update(
        RunDefinitionWorkflow.decide,
        DecisionRequest(decision=DecisionKind.APPROVE, actor="alice", step_id="review"),
    )
    assert record.accepted


async def test_approve_reject_races_decide_once(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    trials, batch = 300, 20
    doubles = 0
    accepted_total = 0

    async def trial() -> None:
        nonlocal doubles, accepted_total
        handle = await _start(client, task_queue, stay_open=True)
        approve = mint(
            keys.new_private,
            tenant=TENANT,
            run=handle.id,
            actor="alice",
            decisions=["approve"],
            step="review",
        )
        reject = mint(
            keys.new_private, tenant=TENANT, run=handle.id, actor="bob", decisions=["reject"], step="review"
        )
        outcomes = await asyncio.gather(
            handle.execute_update(
                RunDefinitionWorkflow.decide,
                DecisionRequest(
                    decision=DecisionKind.APPROVE, actor="alice", step_id="review", token=approve
                ),
            ),
            handle.execute_update(
                RunDefinitionWorkflow.decide,
                DecisionRequest(decision=DecisionKind.REJECT, actor="bob", step_id="review", token=reject),
            ),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        for o in outcomes:
            if isinstance(o, BaseException):  # the loser is refused by the validator, named
                assert isinstance(o, WorkflowUpdateFailedError), o
                assert "no approval is pending" in str(getattr(o.cause, "message", "")), o.cause
        final = await status(handle)
        recorded = [d for d in final.decisions if d.accepted]
        accepted_total += len(accepted)
        if len(accepted) != 1 or len(recorded) != 1:
            doubles += 1
        await handle.terminate("test over")

    for start_at in range(0, trials, batch):
        await asyncio.gather(*(trial() for _ in range(min(batch, trials - start_at))))
    print(f"approve/reject races: {trials} trials, {doubles} double or missing transitions")
    assert doubles == 0
    assert accepted_total == trials


async def test_a_token_spent_in_one_run_proves_nothing_in_a_run_started_later_under_its_id(
    client: Client, task_queue: str, worker: Worker, keys: Keys
) -> None:
    """The attacker holds tokens spent in a run (a reject, a cancel: from shell history, a log, a
    chat) and waits for the business key to run again, as ``start_run`` allows after a failure or a
    cancel. Before, the new run knew none of the spent ``jti`` and the reject token approved it
    (found by an attacker's probe). Minted by ``FlowClient`` (claim ``chain``) or by an identity
    provider (no ``chain``: issued before the new run started), the tokens are refused there."""
    flows = FlowClient(client, task_queue=task_queue, tenant=TENANT)
    flows.decision_proof = True
    key = unique("expense")
    document = _approval(unique("rerun"))
    await flows.start_run(document, {"amount": 10}, workflow_id=key)
    first = client.get_workflow_handle(key)
    await wait_state(first, RunState.AWAITING_APPROVAL)
    chained = await flows.mint_decision_token(
        key, "alice", ["approve", "reject"], step_id="review", signing_key=str(keys.private_path)
    )
    assert (
        jwt.decode(chained, options={"verify_signature": False})["chain"] == (await first.describe()).run_id
    )
    # An identity provider's token names no chain; this one was issued a minute before the re-run.
    unchained = mint(
        keys.new_private,
        tenant=TENANT,
        run=key,
        actor="bob",
        decisions=["approve", "reject", "cancel"],
        step="review",
        ttl_s=3600,
        now=time.time() - 60,
    )
    await flows.reject(key, "alice", step_id="review", reason="too much", token=chained)
    assert (await flows.result(key)).state == RunState.FAILED

    await flows.start_run(document, {"amount": 99999}, workflow_id=key)
    second = client.get_workflow_handle(key)
    await wait_state(second, RunState.AWAITING_APPROVAL)
    with pytest.raises(DecisionRefusedError, match="token is for an earlier run under this id"):
        await flows.approve(key, "alice", step_id="review", token=chained)
    with pytest.raises(DecisionRefusedError, match="token was issued before this run started"):
        await flows.approve(key, "bob", step_id="review", token=unchained)
    cancel = CancelRunRequest(actor="bob", reason="replayed", token=unchained)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await second.execute_update(RunDefinitionWorkflow.cancel_run, cancel)
    assert "issued before this run started" in str(getattr(refused.value.cause, "message", ""))
    assert (await status(second)).state == RunState.AWAITING_APPROVAL

    # Tokens minted for this run decide it.
    fresh = await flows.mint_decision_token(
        key, "alice", ["approve"], step_id="review", signing_key=str(keys.private_path)
    )
    assert (await flows.approve(key, "alice", step_id="review", token=fresh)).accepted
    assert (await flows.result(key)).state == RunState.COMPLETED
