"""Patch mailbox-ids: a mailbox's id is the digest of its tenant, type and key. Before, it hashed
the key alone (``evt-{tenant}-{type}-{digest of the key}``), so a tenant and type holding ``-``
named another's mailbox (found by an attacker's probe: ``acme`` publishing ``corp-order.paid`` took
the mailbox of ``acme-corp``'s ``order.paid`` first). A run of generation 23 subscribes at the new
ids, across continue-as-new too; a run of an earlier generation at the legacy ones, all its chain
long (publishers of the build before reach only those)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from interpreter.continuation import read_continuation
from interpreter.engine import PATCH_MAILBOX_IDS
from interpreter.events import Event, EventSubscription, legacy_mailbox_id, mailbox_id
from tests.interpreter.test_continuation_parallel import _engine, _looping, _until_carried
from tests.interpreter.test_engine import make_definition, new_runtime, set_vars, work


def test_tenants_and_types_that_end_where_anothers_begin_name_other_mailboxes() -> None:
    attacker, victim = ("acme", "corp-order.paid", "K-1"), ("acme-corp", "order.paid", "K-1")
    assert legacy_mailbox_id(*attacker) == legacy_mailbox_id(*victim)  # the finding
    assert mailbox_id(*attacker) != mailbox_id(*victim)
    assert mailbox_id(*victim).startswith("events-acme-corp-order.paid-")  # still read in the Web UI
    assert mailbox_id(*victim) != legacy_mailbox_id(*victim)
    # A review: the digests are of one length, and a legacy id's key is the attacker's to choose.
    forged = json.dumps(list(victim), separators=(",", ":"))
    assert legacy_mailbox_id("acme", "corp-order.paid", forged)[4:] == mailbox_id(*victim)[7:]
    assert legacy_mailbox_id("acme", "corp-order.paid", forged) != mailbox_id(*victim)  # the prefixes


def test_a_subscription_names_only_a_mailbox_of_its_own_address() -> None:
    fields: dict[str, Any] = {
        "tenant": "acme-corp",
        "type": "order.paid",
        "key": "K-1",
        "workflow_id": "wf-1",
        "path": "paid",
        "since": "2026-12-05T00:00:00Z",
    }
    assert EventSubscription.model_validate(fields).mailbox_workflow == legacy_mailbox_id(
        "acme-corp", "order.paid", "K-1"
    )
    own = EventSubscription.model_validate(
        {**fields, "mailbox": mailbox_id("acme-corp", "order.paid", "K-1")}
    )
    assert own.mailbox_workflow == mailbox_id("acme-corp", "order.paid", "K-1")
    with pytest.raises(ValidationError, match="not the one of the subscription's"):
        EventSubscription.model_validate({**fields, "mailbox": mailbox_id("acme", "corp-order.paid", "K-1")})


def _wait(step_id: str) -> dict[str, Any]:
    note = [{"name": "note", "type": "string", "max_length": 100}]
    return {
        "id": step_id,
        "type": "wait_for_event",
        "event": "order.shipped",
        "key": "order-1",
        "fields": note,
    } | {
        "timeout": "1h",
        "on_timeout": "continue",
    }


@pytest.mark.parametrize("asked", [False, True], ids=["generation-22", "mailbox-ids"])
async def test_a_wait_keeps_its_generations_mailbox_across_continue_as_new(
    asked: bool,
) -> None:
    definition = make_definition(
        [
            set_vars("init", {"a": 0}),
            {
                "id": "par",
                "type": "parallel",
                "branches": [
                    {"id": "loop", "steps": _looping("l", "a", 8, 1)},
                    {"id": "ship", "steps": [work("ask", 1, value="x"), _wait("shipped")]},
                ],
            },
            _wait("again"),
        ],
        cancel_on=[{"event": "order.cancelled", "key": "order-1"}],
    )
    rt = new_runtime()
    if not asked:  # a run of an earlier generation: every run of its chain
        rt.declined.add(PATCH_MAILBOX_IDS)
    _, data = await _until_carried(definition, rt, "event", "branches", every=1, count=1)
    new, legacy = mailbox_id("default", "order.shipped", "order-1"), None
    first = [s.mailbox for s in rt.subscriptions if s.path.endswith("shipped")]
    assert first == [legacy if not asked else new]
    cancel_on = [s.mailbox for s in rt.subscriptions if s.path == "cancel_on[0]"]
    assert cancel_on[0] == (None if not asked else mailbox_id("default", "order.cancelled", "order-1"))
    # The next run waits on at the same mailbox, takes the event, unsubscribes there, and its next
    # wait goes to its generation's.
    nxt = _engine(definition, rt, read_continuation(data), every=100)
    rt.publish(Event(id="S-1", type="order.shipped", key="order-1", tenant="default", data={"note": "x"}))
    rt.publish(Event(id="S-2", type="order.shipped", key="order-1", tenant="default", data={"note": "y"}))
    result = await rt.run(nxt.run())
    [shipped] = [r for r in result.steps if r.id == "shipped"]
    assert shipped.output["event_id"] == "S-1"
    carried = {s.mailbox for s in rt.unsubscriptions if s.path.endswith("shipped")}
    assert carried == {legacy if not asked else new}
    assert [s.mailbox for s in rt.subscriptions + rt.unsubscriptions if s.path == "again"][:1] == [
        legacy if not asked else new
    ]
