"""Temporal priority and fairness for a run: the tenant is the fairness key, the definition's
``priority`` (1 highest to 5 lowest) the priority key.

Matching then dispatches a task queue's backlog fairly between tenants (each tenant gets its share,
whatever another tenant queued before it) and, within that, by priority: one tenant's 10,000-item
fan-out does not delay another tenant's approval step. The same value goes on the run (the client
sets it at start; child workflows and continued runs inherit it) and, explicitly, on every activity
the run schedules, so a run started by another client gets it too.
"""

from __future__ import annotations

import hashlib

from temporalio.common import Priority

MAX_FAIRNESS_KEY_BYTES = 64
"""Temporal's limit on a fairness key."""


def fairness_key(tenant: str) -> str:
    """The tenant as a fairness key: itself, or when longer than Temporal allows, a prefix and a
    digest (still one key per tenant)."""
    if len(tenant.encode()) <= MAX_FAIRNESS_KEY_BYTES:
        return tenant
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"{tenant.encode()[:40].decode(errors='ignore')}~{digest}"


def run_priority(tenant: str, priority: int | None) -> Priority:
    """The priority of a run of ``tenant`` whose definition declares ``priority`` (or None)."""
    return Priority(priority_key=priority, fairness_key=fairness_key(tenant))
