"""Action activities: each is a Temporal activity named after the action used in definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from activities.echo import echo
from activities.email import EmailActions
from activities.http import HttpActions
from activities.llm import LlmActions
from activities.messaging import MessagingActions
from activities.outbound import OutboundPolicy
from activities.sql import SqlActions
from activities.webhook import WebhookActions
from interpreter.actions import KNOWN_ACTIONS

__all__ = ["ACTION_NAMES", "build_activities"]

ACTION_NAMES: tuple[str, ...] = KNOWN_ACTIONS
"""Every action name a worker built with :func:`build_activities` serves: the registry's
(:data:`interpreter.actions.ACTION_INPUTS`)."""


def build_activities(
    http_client: httpx.AsyncClient,
    *,
    outbound_policy: OutboundPolicy | None = None,
    sql: SqlActions | None = None,
) -> list[Callable[..., Any]]:
    """All action activities, ready for ``Worker(activities=...)``.

    Args:
        http_client: Shared client used by the ``http``, ``sms``, ``call``, ``sms_status``, ``call_status``,
            ``webhook`` and ``llm`` actions; the caller owns and closes it (built with the outbound policy by
            :func:`activities.outbound.build_http_client`).
        outbound_policy: The policy the ``email`` action's SMTP connections are checked against
            (the one ``http_client`` was built with); default ``WFA_OUTBOUND_ALLOW``'s.
        sql: The ``sql`` action's holder of database pools (the caller closes it); without it a
            new one, whose pools live as long as the process.

    Returns:
        The activity callables, one per name in :data:`ACTION_NAMES`, in the same order.
    """
    messaging = MessagingActions(http_client)
    implementations: dict[str, Callable[..., Any]] = {
        "http": HttpActions(http_client).http,
        "echo": echo,
        "email": EmailActions(outbound_policy or OutboundPolicy.from_env()).email,
        "sms": messaging.sms,
        "call": messaging.call,
        "sms_status": messaging.sms_status,
        "call_status": messaging.call_status,
        "webhook": WebhookActions(http_client).webhook,
        "sql": (sql or SqlActions()).sql,
        "llm": LlmActions(http_client).llm,
    }
    return [implementations[name] for name in ACTION_NAMES]
