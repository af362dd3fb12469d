"""Signed-out inbox sessions, shared by every gateway process through the store's database.

A session cookie is signed, not stored: signing out deletes it from the browser, and the process
that signed it out remembers it (:meth:`gateway.inbox.auth.SessionSigner.end`). A copy of the cookie
still worked on every other gateway process, and on this one once restarted, until it expired (8
hours; found by a probe). :class:`StoredEndedSessions` keeps the SHA-256 of each signed-out
session's CSRF secret in ``inbox_ended_sessions`` (migration 0006) until its cookie would have
expired, and every process asks it before it takes a cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from activities.store.database import Database

__all__ = ["EndedSessions", "StoredEndedSessions"]

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 2.0
"""How long a page waits for the database to say whether its session was signed out (a database
that does not answer held every page for the connect timeout, 10 s: a review)."""


class EndedSessions(Protocol):
    """Where signed-out sessions are remembered beyond one process."""

    async def end(self, csrf: str, expires: float) -> None:
        """Remembers the session of CSRF secret ``csrf`` as signed out until ``expires`` (epoch s)."""

    async def ended(self, csrf: str) -> bool:
        """Whether the session of CSRF secret ``csrf`` was signed out (and has not expired)."""


def _hash(csrf: str) -> str:
    return hashlib.sha256(csrf.encode("utf-8", "surrogatepass")).hexdigest()


class StoredEndedSessions:
    """:class:`EndedSessions` in the store's database (the gateway's, opened on first use).

    When the database cannot be reached, a sign-out is remembered by its process alone and a
    cookie is taken as the process knows it (logged): the inbox keeps serving approvals while the
    database is away, as it did before sessions were stored.
    """

    def __init__(self, database: Callable[[], Awaitable[Database]]) -> None:
        self._database = database

    async def end(self, csrf: str, expires: float) -> None:
        now = datetime.now(UTC)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                await self._store(csrf, expires, now)
        except Exception as err:  # the database is away: this process still remembers it
            log.warning("inbox: a sign-out could not be stored (%s): %s", type(err).__name__, err)

    async def _store(self, csrf: str, expires: float, now: datetime) -> None:
        from sqlalchemy import delete
        from sqlalchemy.dialects.postgresql import insert

        from activities.store.models import EndedSessionRow

        database = await self._database()
        async with database.session_factory() as session, session.begin():
            await session.execute(delete(EndedSessionRow).where(EndedSessionRow.expires_at <= now))
            await session.execute(
                insert(EndedSessionRow)
                .values(session_hash=_hash(csrf), expires_at=datetime.fromtimestamp(expires, UTC))
                .on_conflict_do_nothing()
            )

    async def ended(self, csrf: str) -> bool:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                found = await self._lookup(csrf)
        except Exception as err:
            log.warning("inbox: signed-out sessions could not be read (%s): %s", type(err).__name__, err)
            return False
        return found

    async def _lookup(self, csrf: str) -> bool:
        from sqlalchemy import select

        from activities.store.models import EndedSessionRow

        database = await self._database()
        async with database.session_factory() as session:
            found = (
                await session.execute(
                    select(EndedSessionRow.session_hash).where(
                        EndedSessionRow.session_hash == _hash(csrf),
                        EndedSessionRow.expires_at > datetime.now(UTC),
                    )
                )
            ).first()
        return found is not None
