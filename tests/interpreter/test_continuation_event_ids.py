"""Patch event-ids-by-address across continue-as-new: two branches waiting for different event
types on one key each take an event of the same id while the run switches; the next run restores
both (found by a review: its restore refused the snapshot, "carried for another wait too", and the
chain failed, in the very case the patch lets through). A run of generation 21 takes the first only."""

from __future__ import annotations

from typing import Any

import pytest

from interpreter.continuation import read_continuation
from interpreter.engine import PARALLEL_KIND, PATCH_EVENT_IDS_BY_ADDRESS
from interpreter.events import Event
from tests.interpreter.test_continuation_parallel import _engine, _looping, _snapshot, _until_carried
from tests.interpreter.test_engine import make_definition, new_runtime, set_vars, work


def _wait(step_id: str, event: str) -> dict[str, Any]:
    note = [{"name": "note", "type": "string", "max_length": 100}]
    return {"id": step_id, "type": "wait_for_event", "event": event, "key": "order-1", "fields": note} | {
        "timeout": "1h",
        "on_timeout": "continue",
    }


def _event(event_type: str) -> Event:
    return Event(id="TRK-1", type=event_type, key="order-1", tenant="default", data={"note": event_type})


@pytest.mark.parametrize("by_address", [False, True], ids=["generation-21", "event-ids-by-address"])
async def test_two_branches_take_events_of_one_id_and_the_next_run_restores_both(by_address: bool) -> None:
    definition = make_definition(
        [
            set_vars("init", {"a": 0}),
            {
                "id": "par",
                "type": "parallel",
                "branches": [
                    {"id": "loop", "steps": _looping("l", "a", 8, 1)},
                    {"id": "ship", "steps": [work("ask1", 1, value="x"), _wait("shipped", "order.shipped")]},
                    {
                        "id": "deliv",
                        "steps": [work("ask2", 1, value="x"), _wait("delivered", "order.delivered")],
                    },
                ],
            },
            work("after", value="done"),
        ]
    )
    rt = new_runtime()
    if not by_address:
        rt.declined.add(PATCH_EVENT_IDS_BY_ADDRESS)
    engine, _ = await _until_carried(definition, rt, "event", "branches", every=1, count=2)
    rt.publish(_event("order.shipped"))  # while the run switches
    rt.publish(_event("order.delivered"))
    data = _snapshot(engine)
    lanes = data["kinds"][PARALLEL_KIND]["branches"]
    taken = [lane["event"]["event"] for lane in lanes if lane and "event" in lane]
    types = sorted(t["type"] for t in taken if t is not None)
    assert types == (["order.delivered", "order.shipped"] if by_address else ["order.shipped"])
    _engine(definition, rt, read_continuation(data), every=100)  # restores (raised ValueError before)
