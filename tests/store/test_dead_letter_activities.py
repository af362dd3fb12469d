"""The dead letter activities on a real PostgreSQL: parking is idempotent, resolving records the
decision once; operators read them through the tenant-scoped DeadLetterStore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dead_letters import (
    DEAD_LETTER_PARK,
    DEAD_LETTER_RESOLVE,
    DeadLetterActivities,
    build_store_activities,
)
from activities.store.database import Database
from activities.store.errors import DeadLetterNotFoundError
from activities.store.models import DeadLetterStatus
from activities.store.repository import DeadLetterStore
from interpreter.state import DeadLetterAction, DeadLetterRecord, DeadLetterResolution

PARKED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def record(tenant: str, **changes: Any) -> DeadLetterRecord:
    values: dict[str, Any] = {
        "tenant": tenant,
        "workflow_id": f"order-{uuid4().hex[:8]}",
        "run_id": str(uuid4()),
        "definition": "order-fulfilment",
        "version": 3,
        "park_id": "charge",
        "step_id": "charge",
        "path": "charge",
        "action": "http",
        "input": {"url": "http://pay/charge", "json": {"amount": 42}},
        "error": "HTTP 503 from http://pay/charge",
        "error_type": "HttpServerError",
        "attempts": 5,
        "parked_at": PARKED_AT,
    }
    return DeadLetterRecord(**{**values, **changes})


def resolution(
    row_id: int, action: DeadLetterAction, actor: str = "ops", tenant: str = "default", **changes: Any
) -> DeadLetterResolution:
    return DeadLetterResolution(
        dead_letter_id=row_id,
        tenant=tenant,
        action=action,
        actor=actor,
        resolved_at=PARKED_AT + timedelta(hours=1),
        **changes,
    )


@pytest.fixture
def activities(database: Database) -> DeadLetterActivities:
    return DeadLetterActivities(database.session_factory)


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


def test_activity_names(database: Database) -> None:
    park, resolve, subflow_resolve = build_store_activities(database.session_factory)
    assert park.__temporal_activity_definition.name == DEAD_LETTER_PARK  # type: ignore[attr-defined]
    assert resolve.__temporal_activity_definition.name == DEAD_LETTER_RESOLVE  # type: ignore[attr-defined]
    assert (DEAD_LETTER_PARK, DEAD_LETTER_RESOLVE) == ("dead_letter_park", "dead_letter_resolve")
    assert subflow_resolve.__temporal_activity_definition.name == "subflow_resolve"  # type: ignore[attr-defined]


async def test_park_is_idempotent_and_the_row_is_open(
    activities: DeadLetterActivities, env: ActivityEnvironment, database: Database, tenant: str
) -> None:
    parked = record(tenant)
    first = await env.run(activities.park, parked)
    again = await env.run(activities.park, parked)  # a retried activity
    assert first == again
    # Another park of the same step in the same run (after a redrive) is another row.
    second_park = await env.run(
        activities.park, parked.model_copy(update={"park_id": "charge~2", "attempts": 2})
    )
    assert second_park != first

    store = DeadLetterStore(database.session_factory, tenant)
    rows = await store.list()
    assert [(r.id, r.park_id, r.status) for r in rows] == [
        (first, "charge", "open"),
        (second_park, "charge~2", "open"),
    ]
    row = await store.get(first)
    assert (
        row.model_dump(exclude={"id", "status", "resolved_by", "resolved_at", "resolution"})
        == parked.model_dump()
    )
    assert (row.resolved_by, row.resolved_at, row.resolution) == (None, None, None)
    assert await store.list(workflow_id=parked.workflow_id) == rows
    assert await store.list(workflow_id="other") == []


@pytest.mark.parametrize(
    ("action", "status", "changes", "recorded"),
    [
        (
            DeadLetterAction.REDRIVE,
            "redriven",
            {"input": {"url": "http://pay/v2"}},
            {"input": {"url": "http://pay/v2"}},
        ),
        (DeadLetterAction.SKIP, "skipped", {"output": {"charged": False}}, {"output": {"charged": False}}),
        (
            DeadLetterAction.ABORT,
            "aborted",
            {"reason": "customer cancelled"},
            {"reason": "customer cancelled"},
        ),
        (DeadLetterAction.TIMEOUT, "timed_out", {}, {}),
    ],
    ids=lambda v: v.value if isinstance(v, DeadLetterAction) else None,
)
async def test_resolve_records_the_decision_once(
    activities: DeadLetterActivities,
    env: ActivityEnvironment,
    database: Database,
    tenant: str,
    action: DeadLetterAction,
    status: str,
    changes: dict[str, Any],
    recorded: dict[str, Any],
) -> None:
    row_id = await env.run(activities.park, record(tenant))
    decision = resolution(row_id, action, tenant=tenant, **changes)
    assert await env.run(activities.resolve, decision) is None
    await env.run(activities.resolve, decision)  # a retried activity changes nothing
    # A later, different decision does not overwrite the first.
    await env.run(
        activities.resolve,
        resolution(row_id, DeadLetterAction.ABORT, actor="late", tenant=tenant, reason="too late"),
    )

    row = await DeadLetterStore(database.session_factory, tenant).get(row_id)
    assert row.status == DeadLetterStatus(status)
    assert (row.resolved_by, row.resolved_at) == ("ops", decision.resolved_at)
    assert row.resolution is not None
    assert row.resolution["action"] == action.value
    for key, value in recorded.items():
        assert row.resolution[key] == value
    store = DeadLetterStore(database.session_factory, tenant)
    assert await store.list() == []
    assert [r.id for r in await store.list(status)] == [row_id]
    assert [r.id for r in await store.list("all")] == [row_id]


async def test_resolving_an_unknown_row_fails_without_retrying(
    activities: DeadLetterActivities, env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await env.run(activities.resolve, resolution(987654321, DeadLetterAction.SKIP))
    assert caught.value.type == "DeadLetterNotFound"
    assert caught.value.non_retryable
    assert "no dead letter with id 987654321" in caught.value.message


async def test_dead_letters_are_scoped_by_tenant(
    activities: DeadLetterActivities, env: ActivityEnvironment, database: Database, tenant: str
) -> None:
    row_id = await env.run(activities.park, record(tenant))
    other = DeadLetterStore(database.session_factory, f"{tenant}-other")
    assert await other.list("all") == []
    with pytest.raises(
        DeadLetterNotFoundError, match=f"no dead letter with id {row_id} in tenant '{tenant}-other'"
    ):
        await other.get(row_id)
    with pytest.raises(ValueError, match="given to the store of"):
        await other.park(record(tenant))
    # The run's resolution names its tenant: another tenant's id is not found, the row stays open.
    with pytest.raises(ApplicationError, match=f"no dead letter with id {row_id} in tenant '{tenant}-other'"):
        await env.run(activities.resolve, resolution(row_id, DeadLetterAction.SKIP, tenant=f"{tenant}-other"))
    assert [r.id for r in await DeadLetterStore(database.session_factory, tenant).list()] == [row_id]
