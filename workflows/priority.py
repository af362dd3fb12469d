"""Temporal priority and fairness for a run: the tenant is the fairness key, the definition's
``priority`` (1 highest to 5 lowest) the priority key.

Matching dispatches a task queue's backlog by priority first and then, within one priority, fairly
between fairness keys (each tenant gets its share, whatever another tenant queued before it): one
tenant's 10,000-item fan-out does not delay another tenant's approval step. The same value goes on
the run (the client sets it at start; child workflows and continued runs inherit it) and,
explicitly, on every activity the run schedules, so a run started by another client gets it too.

Because priority comes before fairness, a priority above the default (1 or 2) would let one
tenant's work go before every other tenant's: definitions are written by tenants' users, so a
tenant's definition gets it only when the platform grants it (``WFA_PRIORITY_TENANTS``, read by the
client that starts runs and, through the local activity ``wfa.priority_granted``, by the worker for
what a run schedules); otherwise 1 and 2 run at the default, 3. A lower priority (4, 5) only
yields, so it is always honoured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from temporalio.common import Priority

MAX_FAIRNESS_KEY_BYTES = 64
"""Temporal's limit on a fairness key."""
DEFAULT_PRIORITY = 3
"""Temporal's default priority key (of 1-5): what a run or activity without one gets."""
DEFAULT_FAIRNESS_WEIGHT = 1.0
"""Temporal's default fairness weight: every tenant's key gets an equal share. The worker never
lets a run's activities or children inherit another weight from the run (a raw client's)."""
PRIORITY_TENANTS_ENV = "WFA_PRIORITY_TENANTS"
"""Comma-separated tenants whose definitions may ask a priority above the default (1 or 2); ``*``
grants every tenant (a deployment with one tenant, or tenants that trust each other). Unset: none."""
EVERY_TENANT: frozenset[str] = frozenset({"*"})
"""Grants that grant every tenant (what runs scheduled with before the grants)."""
NO_TENANT: frozenset[str] = frozenset()
"""Grants that grant no tenant."""
PRIORITY_GRANTED_ACTIVITY = "wfa.priority_granted"
"""The local activity answering whether the worker grants a tenant priorities above the default
(``activities.run_control.priority_granted``): recorded, so a replay keeps the answer the run got."""


def priority_grants(environ: Mapping[str, str]) -> frozenset[str]:
    """The tenants granted priorities above the default (``WFA_PRIORITY_TENANTS`` of ``environ``)."""
    raw = environ.get(PRIORITY_TENANTS_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def above_default(priority: int | None) -> bool:
    """Whether ``priority`` asks to go before the default (1 or 2): what needs a grant."""
    return priority is not None and priority < DEFAULT_PRIORITY


def is_granted(tenant: str, grants: frozenset[str]) -> bool:
    """Whether ``grants`` grant ``tenant`` priorities above the default (``*`` grants everyone)."""
    return "*" in grants or tenant in grants


def granted_priority(tenant: str, priority: int | None, grants: frozenset[str]) -> int | None:
    """The priority key a run of ``tenant`` gets for a definition declaring ``priority``: as
    declared, but a priority above the default only for a tenant in ``grants`` (else the default)."""
    if not above_default(priority) or is_granted(tenant, grants):
        return priority
    return DEFAULT_PRIORITY


def fairness_key(tenant: str) -> str:
    """The tenant as a fairness key: itself, or when longer than Temporal allows, a prefix and a
    digest (still one key per tenant)."""
    if len(tenant.encode()) <= MAX_FAIRNESS_KEY_BYTES:
        return tenant
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"{tenant.encode()[:40].decode(errors='ignore')}~{digest}"


def run_priority(tenant: str, priority: int | None, *, grants: frozenset[str]) -> Priority:
    """The priority of a run of ``tenant`` whose definition declares ``priority`` (or None), as
    :func:`granted_priority` grants it."""
    return Priority(
        priority_key=granted_priority(tenant, priority, grants), fairness_key=fairness_key(tenant)
    )
