"""The ``decision_links`` activity: mails people the links that decide a pending step for them.

For each recipient it mints decision tokens (the run's tenant's signing key, ``WFA_DECISION_SIGNING_KEYS``;
else the one key of ``WFA_DECISION_SIGNING_KEY``)
bound to the run, the step, the person and one decision each (approve, reject; complete for a
task), valid until the step's deadline (else :data:`DEFAULT_LINK_TTL_S`), and sends one message
through the ``email`` action (the tenant's SMTP settings, the outbound policy) with links to the
inbox (``WFA_INBOX_URL``): ``<inbox>/link?t=<token>``. A link shows the step and asks to confirm
(and shows the form when the step declares fields); the run accepts each token once.

The tokens are minted here so that they never enter the run's history (an activity's result does:
it holds only the recipients). Failure types: ``DecisionLinksNotConfigured`` (no signing key or
inbox URL; not retried) and the ``email`` action's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from temporalio.exceptions import ApplicationError

from activities.base import action
from interpreter.actions import ActionRequest, ActionResult
from interpreter.state import DECISION_LINKS_ACTIVITY, DecisionLinksInput
from starter import tokens

INBOX_URL_ENV = "WFA_INBOX_URL"
DEFAULT_LINK_TTL_S = 7 * 24 * 3600
"""How long links of a step without a deadline stay valid."""

EmailSender = Callable[[ActionRequest], Awaitable[ActionResult]]

_configured: tuple[dict[str, Any] | None, str | None] | None = None


def configure(signing_key: dict[str, Any] | None, inbox_url: str | None) -> None:
    """Sets the signing key and inbox URL of this process (tests; the worker reads the environment)."""
    global _configured
    _configured = (signing_key, inbox_url)


def reset() -> None:
    """Back to the environment's configuration."""
    global _configured
    _configured = None


def _settings(tenant: str) -> tuple[dict[str, Any], str]:
    if _configured is not None:
        key, url = _configured
    else:
        keys = tokens.load_signing_keys()
        key = keys.get(tenant) or keys.get("*")
        url = os.environ.get(INBOX_URL_ENV)
    if key is None or not url:
        raise ApplicationError(
            f"decision links need the tenant's signing key ({tokens.SIGNING_KEYS_ENV} or"
            f" {tokens.SIGNING_KEY_ENV}) and the inbox's URL"
            f" ({INBOX_URL_ENV}) on the worker",
            type="DecisionLinksNotConfigured",
            non_retryable=True,
        )
    return key, url.rstrip("/")


def link_ttl(expires_at: datetime | None, now: float) -> float:
    """Seconds the links stay valid: until the step's deadline, else the default (at least a minute)."""
    if expires_at is None:
        return DEFAULT_LINK_TTL_S
    return min(max(expires_at.timestamp() - now, 60.0), tokens.MAX_TTL_S)


def message_text(spec: DecisionLinksInput, links: list[tuple[str, str]], inbox: str) -> str:
    """The message: the step's message (and description), then one line per link."""
    lines = [spec.message, *([spec.description] if spec.description else []), ""]
    lines += [f"{label}: {url}" for label, url in links]
    lines += ["", f"Or open your inbox: {inbox}/", "Each link works once, until the step's deadline."]
    return "\n".join(lines)


class DecisionLinks:
    """The ``decision_links`` activity; ``DecisionLinks(email).decision_links`` is registered.

    Args:
        email: The ``email`` action's activity function (its SMTP settings and outbound policy).
    """

    def __init__(self, email: EmailSender) -> None:
        self._email = email

    @action(DECISION_LINKS_ACTIVITY)
    async def decision_links(self, request: ActionRequest) -> dict[str, Any]:
        """Mints each recipient's tokens and mails the links.

        Returns:
            ``{"sent": [actor, ...]}`` (never the tokens).
        """
        spec = DecisionLinksInput.model_validate(request.input)
        key, inbox = _settings(request.tenant)
        now = time.time()
        ttl = link_ttl(spec.expires_at, now)
        decisions = (
            [("Complete the task", "complete")]
            if spec.kind == "task"
            else [
                ("Approve", "approve"),
                ("Reject", "reject"),
            ]
        )
        sent: list[str] = []
        for recipient in spec.recipients:
            links = []
            for label, decision in decisions:
                token = tokens.mint(
                    key,
                    tenant=request.tenant,
                    run=spec.workflow_id,
                    actor=recipient.actor,
                    decisions=[decision],
                    step=spec.path,
                    ttl_s=ttl,
                    now=now,
                    since=spec.since,
                )
                shown = f"{label} (with the form)" if spec.required_fields and decision != "reject" else label
                links.append((shown, f"{inbox}/link?{urlencode({'t': token})}"))
            if spec.has_fields:
                query = urlencode({"run": spec.workflow_id, "step": spec.path})
                links.append(("Open it in your inbox (sign-in)", f"{inbox}/item?{query}"))
            text = message_text(spec, links, inbox)
            await self._email(
                ActionRequest(
                    step_id=request.step_id,
                    idempotency_key=f"{request.idempotency_key}/{recipient.actor}",
                    input={
                        "to": [recipient.address],
                        "subject": spec.subject[:900],
                        "text": text,
                        "account": spec.account,
                    },
                    tenant=request.tenant,
                )
            )
            sent.append(recipient.actor)
        return {"sent": sent}
