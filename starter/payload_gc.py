"""Garbage collection of stored payloads (``wfa payloads gc``): the blobs of one namespace that no
open run references and that were last stored longer ago than a retention.

What a live run needs is in its own history: its input (with a continue-as-new snapshot), its
activities' results, the signals and updates it received, the results of its children. So a blob
is *referenced* when a reference to it appears in the history of a run that is still open (every
open run of the namespace is read) or in a schedule of the namespace (its action holds the input of
the runs it will start). A blob is *old* when it was last stored (written, or found
already there by a later store: the store refreshes its time, content addressing makes the same
blob serve many runs) longer ago than the retention; the default is the namespace's retention plus
:data:`DEFAULT_MARGIN`, and at least :data:`MIN_AGE` always, since a payload is stored before the
history event that refers to it is written (an activity's result, a run's input at its start).

Only old, unreferenced blobs are deleted; the delete itself checks the age again (PostgreSQL:
in the ``DELETE``; files: after moving the file aside), so a blob stored again meanwhile by a new
run is kept. A closed run's payloads stay readable (``wfa result``, the Web UI) for the retention
after they were last stored; past that, a closed run whose history Temporal still keeps shows the
reference but not the value.

``s3://`` is not covered: an S3 object's age is its first write (the README says what that means for a lifecycle rule).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat as stat_mode
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from starter.payload_store import (
    _DIGEST,
    AnyDriver,
    FilesystemDriver,
    PayloadStoreConfig,
    PayloadStoreConfigError,
    PayloadStoreError,
    PostgresDriver,
)

__all__ = ["DEFAULT_MARGIN", "MIN_AGE", "GcReport", "StoredBlob", "collect", "open_run_references"]

MIN_AGE = timedelta(hours=1)
"""The youngest a blob may be to be deleted, whatever ``--older-than`` says."""
DEFAULT_MARGIN = timedelta(days=7)
"""Added to the namespace's retention for the default age."""
_REFERENCE_TYPE = b"temporal.api.sdk.v1.ExternalStorageReference"


@dataclass(frozen=True)
class StoredBlob:
    """One stored payload."""

    digest: str
    size: int
    stored_at: datetime
    """When it was last stored (file mtime; ``payload_blobs.created_at``)."""


@dataclass
class GcReport:
    """What a collection found and did."""

    namespace: str
    store: str
    older_than: timedelta
    cutoff: datetime
    dry_run: bool
    open_runs: int = 0
    referenced: int = 0
    """Distinct blobs of this namespace referenced by open runs."""
    kept_referenced: list[StoredBlob] = field(default_factory=list)
    """Old blobs kept because an open run references them."""
    deleted: list[StoredBlob] = field(default_factory=list)
    """Deleted (or, in a dry run, to be deleted)."""

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""

        def blob(b: StoredBlob) -> dict[str, Any]:
            return {"digest": b.digest, "size": b.size, "stored_at": b.stored_at.isoformat()}

        return {
            "namespace": self.namespace,
            "store": self.store,
            "older_than_s": int(self.older_than.total_seconds()),
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "open_runs": self.open_runs,
            "referenced": self.referenced,
            "kept_referenced": [blob(b) for b in self.kept_referenced],
            "deleted": [blob(b) for b in self.deleted],
            "deleted_bytes": sum(b.size for b in self.deleted),
        }


def _payloads(message: Any) -> Iterable[Payload]:
    """Every payload in a protobuf message, at any depth."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if hasattr(value, "ListFields"):
            items: Iterable[Any] = [value]
        elif hasattr(value, "values"):  # a map (of payloads: memo, search attributes, headers)
            items = value.values()
        else:  # a repeated field
            items = value
        for item in items:
            if isinstance(item, Payload):
                yield item
            elif hasattr(item, "ListFields"):
                yield from _payloads(item)


def _digest_of(payload: Payload, driver: str, namespace: str) -> str | None:
    if payload.metadata.get("messageType") != _REFERENCE_TYPE:
        return None
    try:
        reference = json.loads(payload.data)
    except ValueError:
        return None
    if not isinstance(reference, dict) or reference.get("driverName") != driver:
        return None
    claim = reference.get("claimData")
    if not isinstance(claim, dict) or claim.get("namespace", "") != namespace:
        return None
    digest = claim.get("digest")
    return digest if isinstance(digest, str) and _DIGEST.match(digest) else None


async def open_run_references(
    client: Client, driver: str, closed_since: datetime | None = None
) -> tuple[int, set[str]]:
    """The number of open runs of the client's namespace (and, with ``closed_since``, of the runs
    closed since then) and the digests their histories refer to (references of ``driver`` in that
    namespace), plus those the namespace's schedules refer to (a schedule's action holds the input
    of the runs it will start)."""
    namespace = client.namespace
    runs = 0
    digests: set[str] = set()

    def add(message: Any) -> None:
        for payload in _payloads(message):
            digest = _digest_of(payload, driver, namespace)
            if digest is not None:
                digests.add(digest)

    async for workflow_id, run_id in _open_executions(client, closed_since):
        runs += 1
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async for event in handle.fetch_history_events():
            add(event)
    for schedule in await _schedule_ids(client):
        from temporalio.api.workflowservice.v1 import DescribeScheduleRequest
        from temporalio.service import RPCError, RPCStatusCode

        try:
            add(
                await client.workflow_service.describe_schedule(
                    DescribeScheduleRequest(namespace=namespace, schedule_id=schedule)
                )
            )
        except RPCError as err:  # deleted meanwhile
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
    return runs, digests


CLOSED_STATUSES = ("Completed", "Failed", "Canceled", "Terminated", "ContinuedAsNew", "TimedOut")
OPEN_RUNS_QUERY = " AND ".join(f'ExecutionStatus != "{status}"' for status in CLOSED_STATUSES)
"""Every run that is not closed: running, paused (Temporal's workflow pause) and any open status
a later server adds. A run not in a closed status keeps what it refers to."""


async def _open_executions(
    client: Client, closed_since: datetime | None = None
) -> AsyncIterator[tuple[str, str]]:
    """The (workflow id, run id) of every run of the namespace that is not closed, or closed after
    ``closed_since`` (raw calls: the SDK's listing decodes the status, and fails on one it does not
    know, such as Paused)."""
    from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest

    query = OPEN_RUNS_QUERY
    if closed_since is not None:
        since = closed_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f'({OPEN_RUNS_QUERY}) OR CloseTime > "{since}"'
    token = b""
    while True:
        page = await client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(
                namespace=client.namespace, query=query, page_size=1000, next_page_token=token
            )
        )
        for info in page.executions:
            yield info.execution.workflow_id, info.execution.run_id
        token = page.next_page_token
        if not token:
            return


async def _schedule_ids(client: Client) -> list[str]:
    """The namespace's schedules (raw calls: the SDK's would decode, so read, their payloads)."""
    from temporalio.api.workflowservice.v1 import ListSchedulesRequest

    ids: list[str] = []
    token = b""
    while True:
        page = await client.workflow_service.list_schedules(
            ListSchedulesRequest(namespace=client.namespace, maximum_page_size=1000, next_page_token=token)
        )
        ids.extend(entry.schedule_id for entry in page.schedules)
        token = page.next_page_token
        if not token:
            return ids


async def namespace_retention(client: Client) -> timedelta:
    """The namespace's workflow execution retention."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    return timedelta(seconds=described.config.workflow_execution_retention_ttl.ToSeconds())


# ------------------------------------------------------------------------------ the drivers' blobs


def _fs_blobs(driver: FilesystemDriver, namespace: str, cutoff: datetime) -> Iterable[StoredBlob]:
    directory = driver.path(namespace, "0" * 64).parent.parent
    if not directory.is_dir():
        return
    for path in directory.glob("??/*"):
        if not _DIGEST.match(path.name):  # temporary files (.name.pid.tmp), strays
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if not stat_mode.S_ISREG(stat.st_mode):  # a directory or device named like a digest: not a blob
            continue
        stored_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        if stored_at < cutoff:
            yield StoredBlob(path.name, stat.st_size, stored_at)


def _fs_listed(driver: FilesystemDriver, namespace: str, cutoff: datetime) -> list[StoredBlob]:
    """:func:`_fs_blobs` as a list; a directory that cannot be read is the store's error."""
    try:
        return list(_fs_blobs(driver, namespace, cutoff))
    except OSError as err:
        raise PayloadStoreError(
            f"wfa.fs: cannot read {driver.path(namespace, '0' * 64).parent.parent}"
            f" ({type(err).__name__}: {err.strerror or err})"
        ) from None


def _fs_delete(driver: FilesystemDriver, namespace: str, blob: StoredBlob, cutoff: datetime) -> bool:
    """Deletes the file if it is still old: moved aside first, its time checked again there (a
    store that found it meanwhile refreshed it), moved back if it is no longer old."""
    path = driver.path(namespace, blob.digest)
    aside = path.with_name(f".{path.name}.gc.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    try:
        found = aside.stat()
        if stat_mode.S_ISREG(found.st_mode) and datetime.fromtimestamp(found.st_mtime, UTC) < cutoff:
            aside.unlink()
            return True
    except OSError:
        os.replace(aside, path)  # put back what could not be deleted, then report it
        raise
    os.replace(aside, path)  # the same bytes a concurrent store may have written again
    return False


async def _pg_blobs(driver: PostgresDriver, namespace: str, cutoff: datetime) -> list[StoredBlob]:
    from sqlalchemy import text

    from activities.store.database import db_errors

    database = await driver.database()
    async with db_errors(database.url), database.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT digest, size_bytes, created_at FROM payload_blobs"
                " WHERE namespace = :ns AND created_at < :cutoff ORDER BY created_at"
            ),
            {"ns": namespace, "cutoff": cutoff},
        )
        return [StoredBlob(digest, int(size), at) for digest, size, at in rows]


async def _pg_delete(
    driver: PostgresDriver, namespace: str, blobs: list[StoredBlob], cutoff: datetime
) -> set[str]:
    """Deletes the rows still old (the age checked in the ``DELETE``: a concurrent store that
    refreshed a row wins). Returns the digests deleted."""
    from sqlalchemy import text

    from activities.store.database import db_errors

    if not blobs:
        return set()
    database = await driver.database()
    async with db_errors(database.url), database.engine.begin() as conn:
        rows = await conn.execute(
            text(
                "DELETE FROM payload_blobs WHERE namespace = :ns AND digest = ANY(:digests)"
                " AND created_at < :cutoff RETURNING digest"
            ),
            {"ns": namespace, "digests": [b.digest for b in blobs], "cutoff": cutoff},
        )
        return {digest for (digest,) in rows}


# ------------------------------------------------------------------------------ the collection


def check_collectable(config: PayloadStoreConfig, older_than: timedelta | None) -> None:
    """Refuses what :func:`collect` cannot do, before anything connects (``wfa payloads gc`` says so
    with exit 2 whether or not a server answers).

    Raises:
        PayloadStoreConfigError: An ``s3://`` store, or ``older_than`` under :data:`MIN_AGE`.
    """
    if config.kind == "s3":
        raise PayloadStoreConfigError(
            "s3:// stores are not collected by wfa: an S3 object's age is its first write, not its last"
            " use (see the README's 'Production: S3' before adding a bucket lifecycle rule)"
        )
    if older_than is not None and older_than < MIN_AGE:
        raise PayloadStoreConfigError(
            f"--older-than must be at least {int(MIN_AGE.total_seconds() // 60)} minutes: a payload is"
            " stored before the history event that refers to it is written"
        )


async def collect(
    client: Client,
    config: PayloadStoreConfig,
    *,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> GcReport:
    """Deletes (or, dry, lists) the blobs of the client's namespace that are older than
    ``older_than`` (default: the namespace's retention plus :data:`DEFAULT_MARGIN`) and that no
    open run references.

    Raises:
        PayloadStoreConfigError: An ``s3://`` store, or ``older_than`` under :data:`MIN_AGE`.
        PayloadStoreError: The store cannot be read.
    """
    from starter.payload_store import describe

    check_collectable(config, older_than)
    if older_than is None:
        older_than = await namespace_retention(client) + DEFAULT_MARGIN
        check_collectable(config, older_than)
    namespace = client.namespace
    cutoff = (now or datetime.now(UTC)) - older_than
    where = describe(config)["where"]
    report = GcReport(namespace, f"{config.kind}:{where}", older_than, cutoff, dry_run)
    driver: AnyDriver = config.driver(namespace)
    try:
        if isinstance(driver, FilesystemDriver):
            old = await asyncio.to_thread(_fs_listed, driver, namespace, cutoff)
        else:
            assert isinstance(driver, PostgresDriver)
            old = await _pg_blobs(driver, namespace, cutoff)
        # The open runs are read after the old blobs are listed: a run that starts in between
        # refers only to blobs it stored (young) or found (refreshed, so young at the delete).
        # A run closed since the cutoff keeps its blobs too: its history is still readable (the
        # status of a run that waited for weeks, closed a minute ago; found by a probe).
        report.open_runs, referenced = await open_run_references(client, driver.name(), cutoff)
        report.referenced = len(referenced)
        report.kept_referenced = [b for b in old if b.digest in referenced]
        candidates = [b for b in old if b.digest not in referenced]
        if dry_run:
            report.deleted = candidates
        elif isinstance(driver, FilesystemDriver):
            for blob in candidates:
                try:
                    if await asyncio.to_thread(_fs_delete, driver, namespace, blob, cutoff):
                        report.deleted.append(blob)
                except OSError as err:
                    raise PayloadStoreError(
                        f"wfa.fs: cannot delete {blob.digest} in {where} ({type(err).__name__}: {err.strerror or err});"
                        f" deleted {len(report.deleted)} before it"
                    ) from None
        else:
            assert isinstance(driver, PostgresDriver)
            gone = await _pg_delete(driver, namespace, candidates, cutoff)
            report.deleted = [b for b in candidates if b.digest in gone]
    finally:
        if isinstance(driver, PostgresDriver):
            await driver.close()
    return report
