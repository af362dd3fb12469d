"""Action activities: each is a Temporal activity named after the action used in definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from activities.echo import echo
from activities.http import HttpActions
from interpreter.actions import KNOWN_ACTIONS

__all__ = ["ACTION_NAMES", "build_activities"]

ACTION_NAMES: tuple[str, ...] = KNOWN_ACTIONS
"""Every action name a worker built with :func:`build_activities` serves: the registry's
(:data:`interpreter.actions.ACTION_INPUTS`)."""


def build_activities(http_client: httpx.AsyncClient) -> list[Callable[..., Any]]:
    """All action activities, ready for ``Worker(activities=...)``.

    Args:
        http_client: Shared client used by the ``http`` action; the caller owns and closes it.

    Returns:
        The activity callables, one per name in :data:`ACTION_NAMES`, in the same order.
    """
    implementations: dict[str, Callable[..., Any]] = {"http": HttpActions(http_client).http, "echo": echo}
    return [implementations[name] for name in ACTION_NAMES]
