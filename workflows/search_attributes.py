"""Search attributes the generic workflow maintains so operators can list runs in the Web UI.

They must be registered on the namespace before use (the dev-server launcher and the test fixtures do
it; production runs ``temporal operator search-attribute create`` once, see the README).
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

DEFINITION_NAME = SearchAttributeKey.for_keyword("DefinitionName")
DEFINITION_VERSION = SearchAttributeKey.for_int("DefinitionVersion")
DEFINITION_HASH = SearchAttributeKey.for_keyword("DefinitionHash")
CURRENT_STEP = SearchAttributeKey.for_keyword("CurrentStep")
RUN_STATE = SearchAttributeKey.for_keyword("RunState")
AWAITING_APPROVAL = SearchAttributeKey.for_bool("AwaitingApproval")
TENANT = SearchAttributeKey.for_keyword("Tenant")
ASSIGNEES = SearchAttributeKey.for_keyword_list("WfaAssignees")
"""Who the run waits for now: ``user:<name>`` for each approver or assignee, ``group:<name>`` for
each candidate group, of every pending approval and human task (empty when none is pending). The
inbox finds a person's work with it. Not personal data beyond the user names the definition names."""


def start_attributes(
    name: str, version: int, content_hash: str, tenant: str, *, engine_level: int
) -> TypedSearchAttributes:
    """The search attributes a run starts with, however it is started (a client, a schedule, a
    parent's subflow or fan-out): its definition, running, nothing awaited yet, its tenant.

    ``engine_level`` is the run's generation (``RunOptions.engine_level``): from
    :data:`~interpreter.state.UNSET_CURRENT_STEP_LEVEL`, ``CurrentStep`` is left unset until the
    run has a step to show (about 45 bytes of every run's history); below it, the run starts with
    ``CurrentStep = ""``, as the workers of those generations expect."""
    from interpreter.state import (  # the dev server's start-up needs only the keys
        UNSET_CURRENT_STEP_LEVEL,
        RunState,
    )

    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(DEFINITION_NAME, name),
        SearchAttributePair(DEFINITION_VERSION, version),
        SearchAttributePair(DEFINITION_HASH, content_hash),
        SearchAttributePair(RUN_STATE, RunState.RUNNING.value),
        SearchAttributePair(AWAITING_APPROVAL, False),
    ]
    if engine_level < UNSET_CURRENT_STEP_LEVEL:
        pairs.append(SearchAttributePair(CURRENT_STEP, ""))
    pairs.append(SearchAttributePair(TENANT, tenant))
    return TypedSearchAttributes(pairs)


ALL_KEYS = (
    DEFINITION_NAME,
    DEFINITION_VERSION,
    DEFINITION_HASH,
    CURRENT_STEP,
    RUN_STATE,
    AWAITING_APPROVAL,
    TENANT,
    ASSIGNEES,
)

# name -> the type word `temporal server start-dev --search-attribute NAME=TYPE` expects.
CLI_TYPES: dict[str, str] = {
    "DefinitionName": "Keyword",
    "DefinitionVersion": "Int",
    "DefinitionHash": "Keyword",
    "CurrentStep": "Keyword",
    "RunState": "Keyword",
    "AwaitingApproval": "Bool",
    "Tenant": "Keyword",
    "WfaAssignees": "KeywordList",
}
