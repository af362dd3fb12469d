"""Large payloads by reference: Temporal's external payload storage with this product's drivers.

A payload at or over the threshold (a run's input, a step's output, the run's result, its status
answer, the snapshot a run continues as new with) is written to a store and replaced, in Temporal's
history, by a small reference (``json/protobuf`` ``ExternalStorageReference``: the driver's name and
a claim). The SDK does it inside the data converter (:class:`temporalio.converter.ExternalStorage`),
after the payload codec: with encryption on, what is stored is the *encrypted* payload, and the
reference itself names only the driver, the namespace and a digest.

Configuration (read wherever the data converter is built: :func:`starter.codec.data_converter`, so
the worker, the client API, the ``wfa`` CLI and the gateway all read references alike):

- ``WFA_PAYLOAD_STORE``: ``fs:<directory>`` (a directory every process can read, e.g. a shared
  volume), ``postgres`` (the store's database, ``DATABASE_URL``; ``postgres:<url>`` names
  another one) or ``s3://<bucket>/<prefix>`` (the SDK's S3 driver: :class:`S3Driver`). Unset or
  ``off``: no external storage (payloads over Temporal's 2 MiB fail).
- ``WFA_PAYLOAD_STORE_THRESHOLD``: bytes from which a payload is stored (default 262144, the SDK's).
- ``WFA_PAYLOAD_STORE_RUN_INPUT``: ``threshold`` (default: a run's start input is stored like any
  payload, from the threshold) or ``always``: every run's *start input* (its definition, input and
  options: what a client, a schedule or a parent starting a subflow or a fan-out slice sends) is
  stored whatever its size, so the run's history holds a reference instead of the definition
  (fewer history bytes per run; :func:`run_input_selector`; encrypted start payloads are looked
  into with the configured keys, to tell the input from the memo). It costs one blob per distinct
  start input (per start with encryption on: every encryption differs), kept while an open run or
  a schedule refers to it (``wfa payloads gc`` reads the open runs' histories and the schedules),
  and a store read whenever a worker loads the run. ``always`` needs ``WFA_PAYLOAD_STORE``.
  The input a run continues as new with counts too. Everything else (step inputs and outputs,
  the result) still goes by the threshold (the result also by ``WFA_PAYLOAD_STORE_RUN_RESULT``). Set it where runs start (clients, gateway, schedules'
  creators; the worker for subflows, fan-out slices and continued runs); readers need only the
  store.
- ``WFA_PAYLOAD_STORE_RUN_RESULT``: ``threshold`` (default) or ``always``: every run's *result*
  (its state, output and step records; a failed run's record in its error's details) of
  :data:`RUN_RESULT_MIN` bytes or more is stored whatever the threshold (:func:`is_run_result`),
  so the history holds a reference instead of the step records. It is the worker's setting (the
  worker writes results); every reader of results (``wfa status``, ``FlowClient``, a parent run
  reading a subflow's) needs the store, as for any stored payload. ``always`` needs
  ``WFA_PAYLOAD_STORE``.
- ``WFA_PAYLOAD_STORE_STATE_BUDGET``: the run-state budget of runs started with the store on
  (default 16 MiB instead of :data:`interpreter.sizes.RUN_STATE_BUDGET`; recorded in the run's
  options, so a run keeps the budget it started with). It is the starting client's claim:
- ``WFA_STATE_BUDGET_MAX`` (the worker's): the most a run gets, whatever its options ask (default
  and lowest 16 MiB, highest 256 MiB). A run asking for more gets the maximum (read once per run by
  the local activity :func:`state_budget_max` and recorded in its history), and a step that would
  bring its state over it fails with ``StateBudgetExceeded`` naming the maximum and the claim.

Blobs are content-addressed (SHA-256 of the stored bytes) per namespace: the same payload is stored
once per namespace (without encryption: AES-GCM's random nonce makes every encryption different),
and a blob is verified against its digest when read, so neither a changed blob nor a forged
reference can hand a run anything else. A driver bound to a namespace (one client per namespace, as
the worker has) refuses references of another namespace. A store replaces bytes found under its digest that
are not the payload's (planted in advance). ``payload_blobs`` is for platform logins only (members
of ``wfa_platform``): tenant roles have no privilege on it (migration 0005). ``wfa payloads gc``
(:mod:`starter.payload_gc`) deletes the blobs no open run references, last stored longer ago than
a retention.

For production, ``s3://`` (see the README, *Large payloads*).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import string
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import DecodeError
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ExternalStorage,
    StorageDriver,
    StorageDriverActivityInfo,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverSelectContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
)
from temporalio.exceptions import ApplicationError

from starter.codec import ENCODING as ENCRYPTED
from starter.codec import PayloadKeysError

if TYPE_CHECKING:
    from temporalio.converter import DataConverter

    from activities.store.database import Database

__all__ = [
    "DEFAULT_STATE_BUDGET",
    "DEFAULT_THRESHOLD",
    "RUN_INPUT_ENV",
    "RUN_INPUT_MODES",
    "RUN_RESULT_ENV",
    "RUN_RESULT_MIN",
    "STATE_BUDGET_ENV",
    "STATE_BUDGET_MAX_ENV",
    "STORE_ENV",
    "THRESHOLD_ENV",
    "FilesystemDriver",
    "PayloadStoreAltered",
    "PayloadStoreConfig",
    "PayloadStoreConfigError",
    "PayloadStoreError",
    "PostgresDriver",
    "external_storage_from_env",
    "is_run_result",
    "is_run_start_input",
    "run_input_selector",
    "state_budget_for",
    "state_budget_max",
    "state_budget_max_from_env",
]

STORE_ENV = "WFA_PAYLOAD_STORE"
THRESHOLD_ENV = "WFA_PAYLOAD_STORE_THRESHOLD"
RUN_INPUT_ENV = "WFA_PAYLOAD_STORE_RUN_INPUT"
RUN_INPUT_MODES = ("threshold", "always")
"""``threshold``: a run's start input is stored from the threshold, like any payload; ``always``:
whatever its size. The values of ``WFA_PAYLOAD_STORE_RUN_RESULT`` too (:data:`RUN_RESULT_ENV`)."""
RUN_RESULT_ENV = "WFA_PAYLOAD_STORE_RUN_RESULT"
"""``threshold`` (default) or ``always``: a run's result (and a failed run's record in its error's
details) is stored from :data:`RUN_RESULT_MIN` bytes, whatever the threshold."""
RUN_RESULT_MIN = 512
"""The smallest result ``WFA_PAYLOAD_STORE_RUN_RESULT=always`` stores: a reference is about 230
bytes, so a smaller result costs the history fewer bytes inline (a run returning no step records)."""
STATE_BUDGET_ENV = "WFA_PAYLOAD_STORE_STATE_BUDGET"
STATE_BUDGET_MAX_ENV = "WFA_STATE_BUDGET_MAX"
DEFAULT_THRESHOLD = 256 * 1024
DEFAULT_STATE_BUDGET = 16 * 1024 * 1024
MAX_THRESHOLD = 2 * 1024 * 1024 - 64 * 1024
"""A threshold over this would let payloads through that Temporal refuses (2 MiB)."""
MAX_STATE_BUDGET = 256 * 1024 * 1024
MAX_BLOB_BYTES = 64 * 1024 * 1024
"""Largest payload a driver stores (a run's state is bounded well below it)."""

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


class PayloadStoreConfigError(PayloadKeysError):
    """The payload store configuration is unusable (names the variable). A :class:`PayloadKeysError`
    so every place that reports unusable payload settings (worker, CLI, gateway) reports it too."""


class PayloadStoreError(RuntimeError):
    """A stored payload cannot be written or read (missing, altered, of another namespace)."""


class PayloadStoreUnavailableError(PayloadStoreError):
    """The store's server cannot be reached (an S3 endpoint refusing or timing out the connection):
    ``wfa`` exits 3, as for an unreachable Temporal server or database; a worker's task is retried."""


class PayloadStoreAltered(PayloadStoreError, ApplicationError):
    """A reference this store will never honour: the bytes under its digest are not the ones
    stored (altered), or it is not a reference of this store (malformed, another namespace's).

    Also a non-retryable :class:`ApplicationError` (type ``PayloadStoreAltered``): raised while a
    worker decodes a workflow activation, the SDK fails the run with this message instead of failing
    the workflow task on every retry (the run would be stuck for ever). A *missing* blob stays a
    plain :class:`PayloadStoreError`: the task is retried, so the run goes on once the blob is
    restored (or the worker's misconfigured store is fixed)."""

    def __init__(self, message: str) -> None:
        ApplicationError.__init__(self, message, type="PayloadStoreAltered", non_retryable=True)

    def __str__(self) -> str:
        """The message alone, as every other store error reads (no ``type:`` prefix)."""
        return self.message


def _segment(namespace: str) -> str:
    """The namespace as one safe path segment (percent-encoded, never ``.`` or ``..``)."""
    if not namespace:
        return "_"
    return "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in namespace.encode("utf-8"))


def _claim_parts(claim: StorageDriverClaim, bound: str | None, driver: str) -> tuple[str, str]:
    """The namespace and digest of a ``wfa.fs`` or ``wfa.postgres`` claim, once checked.

    A claim names no ``hash_algorithm`` since generation 26's build (SHA-256 is the only one, and
    every build of these drivers has read a claim without it as SHA-256: 26 bytes fewer in every
    reference); one written before names ``sha256`` and reads the same."""
    data = claim.claim_data
    namespace = data.get("namespace", "")
    digest = data.get("digest", "")
    if data.get("hash_algorithm", "sha256") != "sha256" or not _DIGEST.match(digest):
        raise PayloadStoreAltered(f"{driver}: not a reference of this store (digest {digest[:80]!r})")
    if len(namespace) > 1000:
        raise PayloadStoreAltered(f"{driver}: not a reference of this store (namespace too long)")
    if bound is not None and namespace != bound:
        raise PayloadStoreAltered(
            f"{driver}: a reference to namespace {namespace[:100]!r}'s payload, read in namespace {bound!r}"
        )
    return namespace, digest


def _target_namespace(context: StorageDriverStoreContext, bound: str | None) -> str:
    target = context.target
    if target is not None and target.namespace:
        return target.namespace
    return bound or ""


def _check_size(data: bytes, driver: str) -> None:
    if len(data) > MAX_BLOB_BYTES:
        raise PayloadStoreError(f"{driver}: a payload of {len(data)} bytes, over {MAX_BLOB_BYTES} bytes")


def _verify(data: bytes, digest: str, where: str) -> Payload:
    if hashlib.sha256(data).hexdigest() != digest:
        raise PayloadStoreAltered(f"{where}: the stored payload does not match its digest (altered)")
    try:
        return Payload.FromString(data)
    except DecodeError:  # bytes planted under their own digest: they will never be a payload
        raise PayloadStoreAltered(
            f"{where}: the stored bytes are not a payload (planted or altered)"
        ) from None


_THREAD_FROM = 64 * 1024
"""Payloads from this size are hashed and parsed in a thread, off the event loop."""


async def _verify_off_loop(data: bytes, digest: str, where: str) -> Payload:
    if len(data) < _THREAD_FROM:
        return _verify(data, digest, where)
    return await asyncio.to_thread(_verify, data, digest, where)


def _matches(path: Path, digest: str) -> bool:
    """Whether the file at ``path`` holds bytes of this digest (False when missing)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except FileNotFoundError:
        return False


class FilesystemDriver(StorageDriver):
    """Stores payloads as files ``<root>/v1/<namespace>/<aa>/<sha256>`` (written atomically).

    Args:
        root: The directory (created on first store). Every process that reads runs (worker,
            clients, gateway) must see the same directory.
        namespace: Bind to one namespace: references of another are refused on read.
    """

    NAME = "wfa.fs"
    state_budget: int = DEFAULT_STATE_BUDGET

    def __init__(self, root: str | os.PathLike[str], *, namespace: str | None = None) -> None:
        self.root = Path(root)
        self.namespace = namespace

    def name(self) -> str:
        """The driver's name, recorded in every reference."""
        return self.NAME

    def type(self) -> str:
        """The driver type."""
        return "wfa.fs"

    def path(self, namespace: str, digest: str) -> Path:
        """Where the payload of this digest lives."""
        return self.root / "v1" / _segment(namespace) / digest[:2] / digest

    def _write(self, path: Path, data: bytes, digest: str) -> None:
        # A file already there is kept only when its bytes are the digest's: one planted or
        # altered in advance is replaced, so it cannot break the reads of the run that stores.
        # Kept, its time is refreshed: `wfa payloads gc` goes by when a blob was last stored.
        if _matches(path, digest):
            try:
                os.utime(path)
                return
            except FileNotFoundError:  # removed meanwhile (a collection): written again below
                pass
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Writes each payload under its digest; an existing file is left alone."""
        namespace = _target_namespace(context, self.namespace)
        claims = []
        for payload in payloads:
            data = payload.SerializeToString()
            _check_size(data, self.NAME)
            digest = hashlib.sha256(data).hexdigest()
            path = self.path(namespace, digest)
            try:
                await asyncio.to_thread(self._write, path, data, digest)
            except OSError as err:
                raise PayloadStoreError(
                    f"{self.NAME}: cannot write {path.name} under {self.root}: {type(err).__name__}: {err.strerror}"
                ) from None
            claims.append(StorageDriverClaim({"namespace": namespace, "digest": digest}))
        return claims

    async def retrieve(
        self,
        context: StorageDriverRetrieveContext,
        claims: Sequence[StorageDriverClaim],
    ) -> list[Payload]:
        """Reads and verifies each payload."""
        out = []
        for claim in claims:
            namespace, digest = _claim_parts(claim, self.namespace, self.NAME)
            path = self.path(namespace, digest)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                raise PayloadStoreError(
                    f"{self.NAME}: stored payload {digest[:16]}... of namespace {namespace!r} is not in"
                    f" {self.root} (deleted, or this process has another {STORE_ENV})"
                ) from None
            except OSError as err:
                raise PayloadStoreError(
                    f"{self.NAME}: cannot read {digest[:16]}...: {err.strerror}"
                ) from None
            out.append(await _verify_off_loop(data, digest, f"{self.NAME} {digest[:16]}..."))
        return out

    async def retrieve_within(self, claims: Sequence[StorageDriverClaim], limit: int) -> list[Payload | None]:
        """Each payload stored in at most ``limit`` bytes, else None (over the limit, missing,
        altered, not a reference of this store): the size is checked before the file is read."""

        def read(path: Path) -> bytes | None:
            try:
                if path.stat().st_size > limit:
                    return None
                return path.read_bytes()
            except OSError:
                return None

        out: list[Payload | None] = []
        for claim in claims:
            try:
                namespace, digest = _claim_parts(claim, self.namespace, self.NAME)
            except PayloadStoreError:
                out.append(None)
                continue
            data = await asyncio.to_thread(read, self.path(namespace, digest))
            out.append(await _checked(data, digest, limit, self.NAME))
        return out


async def _checked(data: bytes | None, digest: str, limit: int, driver: str) -> Payload | None:
    if data is None or len(data) > limit:
        return None
    try:
        return await _verify_off_loop(data, digest, f"{driver} {digest[:16]}...")
    except (PayloadStoreError, ValueError):  # altered, or not a payload (protobuf DecodeError)
        return None


def _platform_only(err: Exception, driver: str) -> PayloadStoreError:
    return PayloadStoreError(
        f"{driver}: {err} (payload_blobs is read and written by platform logins only: give the"
        f" worker, the gateway and the clients that use {STORE_ENV}=postgres a member of wfa_platform)"
    )


class PostgresDriver(StorageDriver):
    """Stores payloads in the table ``payload_blobs`` of the store's database (migration 0005),
    keyed by (namespace, sha256): the same payload is one row.

    Args:
        url: The database; default ``$DATABASE_URL``, else the embedded server.
        namespace: Bind to one namespace: references of another are refused on read.
        database: An open database to use instead (the caller closes it).

    Connections are not pooled (a pool is bound to one event loop; a converter is shared by the
    client's callers): each batch opens one, which costs a few milliseconds on a big payload.
    """

    NAME = "wfa.postgres"
    state_budget: int = DEFAULT_STATE_BUDGET

    def __init__(
        self, url: str | None = None, *, namespace: str | None = None, database: Database | None = None
    ) -> None:
        self.url = url
        self.namespace = namespace
        self._database = database
        self._owned = False

    def name(self) -> str:
        """The driver's name, recorded in every reference."""
        return self.NAME

    def type(self) -> str:
        """The driver type."""
        return "wfa.postgres"

    async def database(self) -> Database:
        """The database, opened (and its schema checked) on first use."""
        if self._database is None:
            from sqlalchemy.pool import NullPool

            from activities.store.database import open_database

            self._database = await open_database(self.url, poolclass=NullPool)
            self._owned = True
        return self._database

    async def close(self) -> None:
        """Closes the database (disposes its engine) if this driver opened it."""
        if self._database is not None and self._owned:
            database, self._database, self._owned = self._database, None, False
            await database.close()

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Inserts each payload. A row already there is kept when its bytes are the payload's and
        replaced when they are not (planted or altered): the digest is the SHA-256 of the new
        bytes, so equal bytes are exactly the bytes that match the digest. Either way its
        ``created_at`` becomes now (when it was last stored: what ``wfa payloads gc`` goes by)."""
        from sqlalchemy import text

        from activities.store.database import db_errors
        from activities.store.errors import AccessDeniedError

        namespace = _target_namespace(context, self.namespace)
        rows = []
        claims = []
        for payload in payloads:
            data = payload.SerializeToString()
            _check_size(data, self.NAME)
            digest = hashlib.sha256(data).hexdigest()
            rows.append({"namespace": namespace, "digest": digest, "data": data, "size": len(data)})
            claims.append(StorageDriverClaim({"namespace": namespace, "digest": digest}))
        database = await self.database()
        try:
            async with db_errors(database.url), database.engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO payload_blobs (namespace, digest, data, size_bytes)"
                        " VALUES (:namespace, :digest, :data, :size)"
                        " ON CONFLICT (namespace, digest) DO UPDATE SET created_at = now(),"
                        " size_bytes = EXCLUDED.size_bytes, data = CASE WHEN payload_blobs.data"
                        " IS DISTINCT FROM EXCLUDED.data THEN EXCLUDED.data ELSE payload_blobs.data END"
                    ),
                    rows,
                )
        except AccessDeniedError as err:
            raise _platform_only(err, self.NAME) from None
        return claims

    async def retrieve(
        self,
        context: StorageDriverRetrieveContext,
        claims: Sequence[StorageDriverClaim],
    ) -> list[Payload]:
        """Reads and verifies each payload."""
        wanted = [_claim_parts(claim, self.namespace, self.NAME) for claim in claims]
        database = await self.database()
        found = await self._select(wanted, None)
        out = []
        for namespace, digest in wanted:
            data = found.get((namespace, digest))
            if data is None:
                raise PayloadStoreError(
                    f"{self.NAME}: stored payload {digest[:16]}... of namespace {namespace!r} is not in"
                    f" {database.safe_url} (deleted, or this process has another {STORE_ENV})"
                )
            out.append(await _verify_off_loop(data, digest, f"{self.NAME} {digest[:16]}..."))
        return out

    async def _select(
        self, wanted: Sequence[tuple[str, str]], limit: int | None
    ) -> dict[tuple[str, str], bytes]:
        """The stored bytes of each (namespace, digest) found; with ``limit``, only rows of at most
        that many bytes are fetched (``octet_length`` reads the stored length, not the bytes)."""
        from sqlalchemy import text

        from activities.store.database import db_errors
        from activities.store.errors import AccessDeniedError

        database = await self.database()
        size_check = "" if limit is None else " AND octet_length(data) <= :limit"
        found: dict[tuple[str, str], bytes] = {}
        try:
            async with db_errors(database.url), database.engine.connect() as conn:
                for namespace in {ns for ns, _ in wanted}:
                    digests = [d for ns, d in wanted if ns == namespace]
                    result = await conn.execute(
                        text(
                            "SELECT digest, data FROM payload_blobs"
                            f" WHERE namespace = :ns AND digest = ANY(:digests){size_check}"
                        ),
                        {"ns": namespace, "digests": digests, "limit": limit},
                    )
                    for digest, data in result:
                        found[(namespace, digest)] = bytes(data)
        except AccessDeniedError as err:
            raise _platform_only(err, self.NAME) from None
        return found

    async def retrieve_within(self, claims: Sequence[StorageDriverClaim], limit: int) -> list[Payload | None]:
        """Each payload stored in at most ``limit`` bytes, else None (over the limit, missing,
        altered, not a reference of this store): larger rows are not fetched at all.

        Raises:
            PayloadStoreError: The database refused the read.
        """
        parts: list[tuple[str, str] | None] = []
        for claim in claims:
            try:
                parts.append(_claim_parts(claim, self.namespace, self.NAME))
            except PayloadStoreError:
                parts.append(None)
        found = await self._select([p for p in parts if p is not None], limit)
        return [None if p is None else await _checked(found.get(p), p[1], limit, self.NAME) for p in parts]


_S3_SAFE = frozenset(string.ascii_letters + string.digits + "!-_.*'()")
_S3_KEY = re.compile(r"^v0/(?:ns/(?P<ns>[^/]+)/)?(?:(?!\.\.?/)[^/]+/)*d/sha256/(?P<digest>[0-9a-f]{64})$")
"""The SDK driver's keys (no ``.`` or ``..`` segment an HTTP stack could collapse)."""


def _s3_segment(namespace: str) -> str:
    """The namespace as the SDK's S3 driver writes it in a key."""
    return "".join(chr(b) if chr(b) in _S3_SAFE else f"%{b:02X}" for b in namespace.encode("utf-8")) or "null"


class S3Driver(StorageDriver):
    """Stores payloads in an S3 bucket through the SDK's driver
    (:class:`temporalio.contrib.aws.s3driver.S3StorageDriver`, extra ``temporalio[aioboto3]``),
    under ``prefix``, with this product's read checks on top.

    The SDK's keys are content-addressed per namespace and workflow
    (``v0/ns/<ns>/wt/<type>/wi/<id>/ri/<run>/d/sha256/<hex>``), written once. Its claims name the
    bucket and the key: read as they are, a reference forged into a run's input would read any
    object the worker's credentials reach. This driver reads only its own bucket, only keys of the
    SDK's shape, and (bound to a namespace) only that namespace's keys.

    Args:
        bucket: The bucket (it must exist).
        prefix: Prepended to every key (``wfa/``), so one bucket can hold other things too.
        namespace: Bind to one namespace: references of another are refused on read.
        env: Where the endpoint (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), the region
            (``AWS_REGION``, else ``AWS_DEFAULT_REGION``) and static credentials
            (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) come from; unset ones are left to
            boto3's usual chain (profile, instance role, ...).

    One aioboto3 client is opened per batch (a client is bound to one event loop; a converter is
    shared by the client's callers).
    """

    NAME = "wfa.s3"
    state_budget: int = DEFAULT_STATE_BUDGET

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        namespace: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        source = os.environ if env is None else env
        self.bucket = bucket
        self.prefix = prefix
        self.namespace = namespace
        self.endpoint_url = source.get("AWS_ENDPOINT_URL_S3") or source.get("AWS_ENDPOINT_URL") or None
        self._session_options = {
            "aws_access_key_id": source.get("AWS_ACCESS_KEY_ID") or None,
            "aws_secret_access_key": source.get("AWS_SECRET_ACCESS_KEY") or None,
            "aws_session_token": source.get("AWS_SESSION_TOKEN") or None,
            "region_name": source.get("AWS_REGION") or source.get("AWS_DEFAULT_REGION") or None,
        }

    def name(self) -> str:
        """The driver's name, recorded in every reference."""
        return self.NAME

    def type(self) -> str:
        """The driver type."""
        return "wfa.s3"

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        try:
            import aioboto3
        except ModuleNotFoundError:
            raise PayloadStoreError(
                f"{self.NAME}: {STORE_ENV}=s3://... needs aioboto3 (pip install 'temporalio[aioboto3]')"
            ) from None
        options: dict[str, Any] = {k: v for k, v in self._session_options.items() if v}
        session = aioboto3.Session(**options)
        async with session.client("s3", endpoint_url=self.endpoint_url) as client:
            yield client

    def _sdk_driver(self, client: Any) -> Any:
        from temporalio.contrib.aws.s3driver import S3StorageDriver
        from temporalio.contrib.aws.s3driver.aioboto3 import new_aioboto3_client

        return S3StorageDriver(
            client=cast(Any, _PrefixedClient(new_aioboto3_client(client), self.prefix)),
            bucket=self.bucket,
            driver_name=self.NAME,
            max_payload_size=MAX_BLOB_BYTES,
        )

    def _key(self, claim: StorageDriverClaim) -> tuple[str, str]:
        """The claim's key and digest, once checked against this store."""
        data = claim.claim_data
        key, digest = data.get("key", ""), data.get("hash_value", "")
        if data.get("bucket") != self.bucket:  # more likely a worker's mistyped bucket: retried
            raise PayloadStoreError(
                f"{self.NAME}: a reference to another bucket ({str(data.get('bucket'))[:100]!r})"
            )
        match = _S3_KEY.match(key) if len(key) <= 1024 else None
        if match is None or data.get("hash_algorithm") != "sha256" or match["digest"] != digest:
            raise PayloadStoreAltered(f"{self.NAME}: not a reference of this store (key {key[:120]!r})")
        if self.namespace is not None and match["ns"] != _s3_segment(self.namespace):
            raise PayloadStoreAltered(
                f"{self.NAME}: a reference to namespace {match['ns']!r}'s payload, read in namespace {self.namespace!r}"
            )
        return key, digest

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Uploads each payload (the SDK's driver: an existing key is left alone)."""
        if self.namespace is not None and context.target is None:
            context = StorageDriverStoreContext(target=StorageDriverWorkflowInfo(namespace=self.namespace))
        try:
            async with self._client() as client:
                claims: list[StorageDriverClaim] = await self._sdk_driver(client).store(context, payloads)
        except PayloadStoreError:
            raise
        except Exception as err:
            raise _s3_error(err)(f"{self.NAME}: cannot write to {self._where()}: {_cause(err)}") from None
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Reads and verifies each payload (refusing references outside this store)."""
        for claim in claims:
            self._key(claim)
        try:
            async with self._client() as client:
                payloads: list[Payload] = await self._sdk_driver(client).retrieve(context, claims)
        except PayloadStoreError:
            raise
        except Exception as err:
            if isinstance(err, ValueError) and "integrity check failed" in str(err):  # the SDK's digest check
                raise PayloadStoreAltered(
                    f"{self.NAME}: the stored payload does not match its digest (altered): {str(err)[:300]}"
                ) from None
            raise _s3_error(err)(f"{self.NAME}: cannot read from {self._where()}: {_cause(err)}") from None
        return payloads

    async def retrieve_within(self, claims: Sequence[StorageDriverClaim], limit: int) -> list[Payload | None]:
        """Each payload stored in at most ``limit`` bytes, else None (over the limit, missing,
        altered, not a reference of this store): the size is asked (``HEAD``) before reading."""
        out: list[Payload | None] = []
        async with self._client() as client:
            for claim in claims:
                try:
                    key, digest = self._key(claim)
                except PayloadStoreError:
                    out.append(None)
                    continue
                data: bytes | None = None
                try:
                    head = await client.head_object(Bucket=self.bucket, Key=self.prefix + key)
                    if int(head.get("ContentLength", limit + 1)) <= limit:
                        response = await client.get_object(Bucket=self.bucket, Key=self.prefix + key)
                        data = await response["Body"].read()
                except Exception:  # missing, denied, unreachable: the UI shows the reference
                    data = None
                out.append(await _checked(data, digest, limit, self.NAME))
        return out


class _PrefixedClient:
    """The SDK's S3 client, with ``prefix`` in front of every key."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def describe(self) -> Mapping[str, str]:
        described: Mapping[str, str] = self._inner.describe()
        return described

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        await self._inner.put_object(bucket=bucket, key=self._prefix + key, data=data)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        found: bool = await self._inner.object_exists(bucket=bucket, key=self._prefix + key)
        return found

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        data: bytes = await self._inner.get_object(bucket=bucket, key=self._prefix + key)
        return data


def _s3_error(err: BaseException) -> type[PayloadStoreError]:
    """:class:`PayloadStoreUnavailableError` when botocore could not connect (somewhere in the
    SDK's chain of causes), else :class:`PayloadStoreError`."""
    import sys

    botocore = sys.modules.get("botocore.exceptions")  # imported by whatever raised it, if it did
    found: BaseException | None = err
    while botocore is not None and found is not None:
        if isinstance(found, botocore.ConnectionError):
            return PayloadStoreUnavailableError
        found = found.__cause__ or found.__context__
    return PayloadStoreError


def _cause(err: BaseException) -> str:
    """The innermost cause of the SDK's wrapped error (botocore's message names the problem)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {str(err)[:300]}"


AnyDriver = FilesystemDriver | PostgresDriver | S3Driver
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


Peek = Callable[[Payload], Payload | None]
"""The payload an encrypted one holds, or None (:meth:`starter.codec.EncryptionCodec.decrypted`)."""


def is_run_start_input(
    target: StorageDriverActivityInfo | StorageDriverWorkflowInfo | None,
    payload: Payload,
    *,
    peek: Peek | None = None,
) -> bool:
    """Whether ``payload`` is the start input of a run: a JSON object with a ``definition`` object
    (:class:`~workflows.generic.RunInput`, whatever the workflow type: runs are listed under their
    definition's name) that starts a workflow, either one not running yet (the target names a
    workflow type and no run: a client's or a schedule's start, a parent starting a child) or the
    next run of a chain (the target is the running workflow, which continues as new with a
    ``continuation``). Not the start's memo or summary, nor an event mailbox's start input, nor a
    signal's, query's or update's argument (their target names no type; a signal-with-start's
    does, which this product does not send), nor any other payload of a running workflow.

    An encrypted payload is looked into through ``peek``; without it, it is not a run input."""
    if not isinstance(target, StorageDriverWorkflowInfo) or not target.type:
        return False
    plain = _plain_json(payload, peek)
    if plain is None or not plain.data.startswith(b"{"):
        return False
    if target.run_id is not None and b'"continuation"' not in plain.data:
        return False  # a running workflow's payload other than its continue-as-new input: no parse
    value = _json_object(plain.data)
    if value is None or not isinstance(value.get("definition"), dict):
        return False
    return target.run_id is None or isinstance(value.get("continuation"), dict)


def _plain_json(payload: Payload, peek: Peek | None) -> Payload | None:
    """The JSON payload ``payload`` is, or holds encrypted (looked into through ``peek``), or None."""
    if payload.metadata.get("encoding") == ENCRYPTED:
        inner = peek(payload) if peek is not None else None
        if inner is None:
            return None
        payload = inner
    return payload if payload.metadata.get("encoding") == b"json/plain" else None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_RESULT_FIELDS = frozenset({"state", "output", "error", "error_type", "steps"})
"""The fields of :class:`~interpreter.state.RunResult` (``state`` first, as it serializes)."""


def is_run_result(
    target: StorageDriverActivityInfo | StorageDriverWorkflowInfo | None,
    payload: Payload,
    *,
    peek: Peek | None = None,
) -> bool:
    """Whether ``payload`` is a run's result: a payload whose target names a running workflow (a
    run id: the SDK's target for a run's own payloads, for those of the activities it runs, and,
    for a child's completion, the parent's run) that is a JSON object with a ``state`` string
    first and no field :class:`~interpreter.state.RunResult` does not have. That is the result a
    run completes with (a subflow's or fan-out slice's too) and the record a failed, compensated
    or cancelled run carries in its error's details. The shape, not the target, leaves out the
    rest: the run's ``status`` answer and the input it continues as new with (``definition``
    first), an activity's input and result (``ActionRequest``, ``ActionResult``); a run being
    started has no run id. An action raising an error whose details have a result's shape would
    have them stored too, and read back the same. An encrypted payload is looked into through
    ``peek``."""
    if not isinstance(target, StorageDriverWorkflowInfo) or target.run_id is None:
        return False
    plain = _plain_json(payload, peek)
    if plain is None or not plain.data.startswith(b'{"state":'):
        return False  # not a RunResult's first field: no parse
    value = _json_object(plain.data)
    return value is not None and isinstance(value.get("state"), str) and value.keys() <= _RESULT_FIELDS


def run_input_selector(
    driver: StorageDriver,
    threshold: int,
    *,
    peek: Peek | None = None,
    inputs: bool = True,
    results: bool = False,
) -> Callable[[StorageDriverSelectContext, Payload], StorageDriver | None]:
    """The ``driver_selector`` of ``WFA_PAYLOAD_STORE_RUN_INPUT=always`` (``inputs``) and
    ``WFA_PAYLOAD_STORE_RUN_RESULT=always`` (``results``): ``driver`` for a payload at or over
    ``threshold`` (as without them), for a run's start input (:func:`is_run_start_input`) whatever
    its size, and for a run's result (:func:`is_run_result`) of :data:`RUN_RESULT_MIN` bytes or
    more; None (inline) for anything else.

    The SDK asks the selector only about payloads at or over its own ``payload_size_threshold``,
    so the storage it serves has that set to 0 and the threshold applies here instead."""

    def select(context: StorageDriverSelectContext, payload: Payload) -> StorageDriver | None:
        size = payload.ByteSize()
        if size >= threshold:
            return driver
        if inputs and is_run_start_input(context.target, payload, peek=peek):
            return driver
        if results and size >= RUN_RESULT_MIN and is_run_result(context.target, payload, peek=peek):
            return driver
        return None

    return select


@dataclass(frozen=True)
class PayloadStoreConfig:
    """What the environment configures (see the module docstring)."""

    kind: str
    """``fs``, ``postgres`` or ``s3``."""
    location: str | None = field(repr=False)  # a URL may hold a password: describe() shows it safely
    """The directory (``fs``), the database URL (``postgres``; None: ``DATABASE_URL``) or
    ``<bucket>/<prefix>`` (``s3``)."""
    threshold: int = DEFAULT_THRESHOLD
    state_budget: int = DEFAULT_STATE_BUDGET
    run_input: str = "threshold"
    """``threshold`` or ``always`` (``WFA_PAYLOAD_STORE_RUN_INPUT``: see the module docstring)."""
    run_result: str = "threshold"
    """``threshold`` or ``always`` (``WFA_PAYLOAD_STORE_RUN_RESULT``: see the module docstring)."""
    aws: Mapping[str, str] = field(default_factory=dict, repr=False)
    """``s3``: the ``AWS_*`` settings read (endpoint, region, credentials: see :class:`S3Driver`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PayloadStoreConfig | None:
        """The configuration, or None when no store is configured.

        Raises:
            PayloadStoreConfigError: A malformed value (the message names the variable).
        """
        source = os.environ if env is None else env
        spec = source.get(STORE_ENV, "").strip()
        run_input = _mode(source, RUN_INPUT_ENV)
        run_result = _mode(source, RUN_RESULT_ENV)
        # Checked with or without a store: a malformed value is a mistake either way.
        threshold = _bytes(source, THRESHOLD_ENV, DEFAULT_THRESHOLD, 0, MAX_THRESHOLD)
        budget = _bytes(source, STATE_BUDGET_ENV, DEFAULT_STATE_BUDGET, 64 * 1024, MAX_STATE_BUDGET)
        if not spec or spec.lower() in ("off", "none"):
            for name, value, what in (
                (RUN_INPUT_ENV, run_input, "start input"),
                (RUN_RESULT_ENV, run_result, "result"),
            ):
                if value == "always":
                    raise PayloadStoreConfigError(
                        f"{name}=always stores every run's {what} in the payload store, but"
                        f" {STORE_ENV} is {'not set' if not spec else repr(spec)}: set it (fs:<directory>,"
                        f" postgres or s3://<bucket>/<prefix>) or unset {name}"
                    )
            return None
        kind, _, location = spec.partition(":")
        kind = kind.strip().lower()
        if kind == "fs":
            if not location.strip():
                raise PayloadStoreConfigError(f"{STORE_ENV}: fs needs a directory (fs:/var/lib/wfa/payloads)")
            directory = location.strip()
            try:
                a_file = Path(directory).exists() and not Path(directory).is_dir()
            except OSError:  # not ours to see (another user's directory): the driver says if it matters
                a_file = False
            if a_file:
                raise PayloadStoreConfigError(f"{STORE_ENV}: {directory[:100]!r} is not a directory")
            chosen: str | None = directory
        elif kind in ("postgres", "postgresql"):
            kind = "postgres"
            chosen = location.strip() or source.get("DATABASE_URL") or None
            if chosen is not None:  # refused now, not at the first payload a run stores
                from activities.store.database import normalize_url
                from activities.store.errors import InvalidDatabaseUrlError

                try:
                    normalize_url(chosen)
                except InvalidDatabaseUrlError as err:
                    where = STORE_ENV if location.strip() else "DATABASE_URL"
                    raise PayloadStoreConfigError(f"{where}: {err}") from None
        elif kind == "s3":
            bucket, _, prefix = location.strip().removeprefix("//").partition("/")
            if not _S3_BUCKET.match(bucket):
                raise PayloadStoreConfigError(
                    f"{STORE_ENV}: {spec[:100]!r}: s3 needs a bucket name (s3://wfa-payloads or s3://bucket/prefix/)"
                )
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            chosen = f"{bucket}/{prefix}"
        else:
            raise PayloadStoreConfigError(
                f"{STORE_ENV}: {spec[:100]!r} is not fs:<directory>, postgres, postgres:<url> or s3://<bucket>/<prefix>"
            )
        aws = {k: v for k, v in source.items() if k.startswith("AWS_")} if kind == "s3" else {}
        return cls(
            kind=kind,
            location=chosen,
            threshold=threshold,
            state_budget=budget,
            run_input=run_input,
            run_result=run_result,
            aws=aws,
        )

    def driver(self, namespace: str | None = None) -> AnyDriver:
        """The driver (bound to ``namespace`` when given), carrying the state budget."""
        driver: AnyDriver
        if self.kind == "fs":
            assert self.location is not None
            driver = FilesystemDriver(self.location, namespace=namespace)
        elif self.kind == "s3":
            assert self.location is not None
            bucket, _, prefix = self.location.partition("/")
            driver = S3Driver(bucket, prefix, namespace=namespace, env=self.aws)
        else:
            driver = PostgresDriver(self.location, namespace=namespace)
        driver.state_budget = self.state_budget
        return driver

    def external_storage(self, namespace: str | None = None, *, peek: Peek | None = None) -> ExternalStorage:
        """The SDK's external storage configuration with this driver and threshold (with
        ``run_input`` or ``run_result`` ``always``, a selector that stores runs' start inputs or
        results too, looking into encrypted payloads through ``peek``); a reference naming another
        driver is read as :class:`ProductExternalStorage` says."""
        driver = self.driver(namespace)
        inputs, results = self.run_input == "always", self.run_result == "always"
        if not inputs and not results:
            return ProductExternalStorage(drivers=[driver], payload_size_threshold=self.threshold)
        return ProductExternalStorage(
            drivers=[driver],
            driver_selector=run_input_selector(
                driver, self.threshold, peek=peek, inputs=inputs, results=results
            ),
            payload_size_threshold=0,
        )


PRODUCT_DRIVER_PREFIX = "wfa."
"""The prefix of this product's store drivers' names (:class:`FilesystemDriver` ``wfa.fs``,
:class:`PostgresDriver` ``wfa.postgres``, :class:`S3Driver` ``wfa.s3``, and any later one)."""


@dataclass(frozen=True)
class ProductExternalStorage(ExternalStorage):
    """The SDK's external storage, saying what a reference to a driver this process lacks means.

    The SDK raises a bare ``ValueError`` ("No driver found"): on a worker the workflow task failed
    on every retry, and ``wfa`` called it an internal error (found by an attacker's probe).

    - A driver of this product (named ``wfa.``...: a ``wfa.fs`` reference read with
      ``WFA_PAYLOAD_STORE=postgres``, or a driver of a later build during a rolling upgrade): this
      process's setting or build differs from the one that stored it, which is fixable, so
      :class:`PayloadStoreError` naming both (a worker's task is retried and the run goes on once
      the setting is corrected, as for a missing blob; ``wfa`` exits 2).
    - Any other name: no configuration of this product will ever read it (a raw client's forged
      reference, or another service's driver), so :class:`PayloadStoreAltered`: a worker fails the
      run saying so.

    Overrides the SDK's private ``_get_driver_by_name``, through which the SDK reads every
    reference: checked at construction, and ``tests/test_payload_store_altered.py`` fails (a run
    stuck instead of failed) if a later SDK reads references without it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(getattr(ExternalStorage, "_get_driver_by_name", None)):
            raise RuntimeError("this temporalio version has no ExternalStorage._get_driver_by_name to refine")

    def _get_driver_by_name(self, name: str) -> StorageDriver:
        try:
            return super()._get_driver_by_name(name)  # the SDK's own name-keyed look-up
        except ValueError:
            pass
        mine = ", ".join(driver.name() for driver in self.drivers)
        if name.startswith(PRODUCT_DRIVER_PREFIX):
            raise PayloadStoreError(
                f"a payload stored by the {name[:60]} store, read with this process's {mine}: set"
                " WFA_PAYLOAD_STORE as the process that stored it has it"
            )
        raise PayloadStoreAltered(
            f"{mine}: not a reference of any store this product configures (driver {name[:60]!r})"
        )


def _mode(source: Mapping[str, str], name: str) -> str:
    """``threshold`` (the default) or ``always``: the value of ``name``, or the error naming it."""
    mode = source.get(name, "").strip().lower() or "threshold"
    if mode not in RUN_INPUT_MODES:
        raise PayloadStoreConfigError(f"{name}: {source[name].strip()[:50]!r} is not threshold or always")
    return mode


def _bytes(source: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = source.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise PayloadStoreConfigError(f"{name}: {text[:50]!r} is not a number of bytes") from None
    if not low <= value <= high:
        raise PayloadStoreConfigError(f"{name}: {value} is not between {low} and {high} bytes")
    return value


def state_budget_max_from_env(env: Mapping[str, str] | None = None) -> int:
    """The worker's cap on a run's state budget (``WFA_STATE_BUDGET_MAX``).

    Raises:
        PayloadStoreConfigError: Not a number of bytes between 16 MiB and 256 MiB.
    """
    source = os.environ if env is None else env
    return _bytes(source, STATE_BUDGET_MAX_ENV, DEFAULT_STATE_BUDGET, DEFAULT_STATE_BUDGET, MAX_STATE_BUDGET)


@activity.defn(name="wfa.state_budget_max")
async def state_budget_max() -> int:
    """The worker's ``WFA_STATE_BUDGET_MAX`` (a local activity of the generic workflow: the value a
    run gets is recorded in its history). The worker checks the variable at start; a value broken
    since falls back to the default, the safe side."""
    try:
        return state_budget_max_from_env()
    except PayloadStoreConfigError:
        return DEFAULT_STATE_BUDGET


def external_storage_from_env(
    env: Mapping[str, str] | None = None, namespace: str | None = None, *, peek: Peek | None = None
) -> ExternalStorage | None:
    """The external storage the environment configures, or None (``peek``: see
    :meth:`PayloadStoreConfig.external_storage`).

    Raises:
        PayloadStoreConfigError: See :meth:`PayloadStoreConfig.from_env`.
    """
    config = PayloadStoreConfig.from_env(env)
    return config.external_storage(namespace, peek=peek) if config is not None else None


def state_budget_for(converter: DataConverter) -> int | None:
    """The run-state budget of a run started through ``converter``: the configured one
    (``WFA_PAYLOAD_STORE_STATE_BUDGET``) when it stores large payloads, else None (the
    interpreter's default, which fits Temporal's 2 MiB)."""
    storage = converter.external_storage
    if storage is None or not storage.drivers:
        return None
    return int(getattr(storage.drivers[0], "state_budget", DEFAULT_STATE_BUDGET))


def describe(config: PayloadStoreConfig) -> dict[str, Any]:
    """What a log line says about the store (never a password)."""
    where: str | None = config.location
    if config.kind == "postgres":
        from activities.store.database import safe_url

        where = safe_url(config.location) if config.location else "the embedded server"
    return {
        "kind": config.kind,
        "where": where,
        "threshold": config.threshold,
        "state_budget": config.state_budget,
        "run_input": config.run_input,
        "run_result": config.run_result,
    }


RESOLVE_LIMIT = 4 * 1024 * 1024
"""Largest stored payload the codec server hands the Web UI in place of its reference."""
RESOLVE_MAX_REFERENCES = 100
"""References resolved per codec request; the rest are left as references."""
RESOLVE_MAX_BYTES = 16 * 1024 * 1024
"""Stored bytes resolved per codec request; once reached, the rest are left as references."""
RESOLVE_DRIVERS = 16
"""Namespaces whose driver the resolver keeps (least recently used evicted, its engine disposed)."""


class ReferenceResolver:
    """Replaces references by the stored payloads, for the codec server: the Web UI then shows a
    stored input or output (decrypted by the codec after this) instead of its reference.

    References of another namespace than the request's, of another driver, missing or altered
    blobs and blobs over :data:`RESOLVE_LIMIT` (checked on the stored size, before reading) are left
    as they are (the UI shows the reference), and so are the references past the first
    :data:`RESOLVE_MAX_REFERENCES` of a request or past :data:`RESOLVE_MAX_BYTES` resolved.
    """

    def __init__(
        self,
        config: PayloadStoreConfig,
        limit: int = RESOLVE_LIMIT,
        *,
        max_references: int = RESOLVE_MAX_REFERENCES,
        max_bytes: int = RESOLVE_MAX_BYTES,
        max_drivers: int = RESOLVE_DRIVERS,
    ) -> None:
        self.config = config
        self.limit = limit
        self.max_references = max_references
        self.max_bytes = max_bytes
        self.max_drivers = max_drivers
        self._drivers: OrderedDict[str, AnyDriver] = OrderedDict()

    async def _driver(self, namespace: str) -> AnyDriver:
        driver = self._drivers.get(namespace)
        if driver is not None:
            self._drivers.move_to_end(namespace)
            return driver
        driver = self._drivers[namespace] = self.config.driver(namespace)
        while len(self._drivers) > self.max_drivers:
            _, evicted = self._drivers.popitem(last=False)
            if isinstance(evicted, PostgresDriver):
                await evicted.close()
        return driver

    async def close(self) -> None:
        """Closes every cached driver."""
        while self._drivers:
            _, driver = self._drivers.popitem()
            if isinstance(driver, PostgresDriver):
                await driver.close()

    async def resolve(self, payloads: Sequence[Payload], namespace: str) -> list[Payload]:
        """The payloads, each reference replaced by its stored payload where it can be."""
        from google.protobuf import json_format
        from temporalio.api.sdk.v1.external_storage_pb2 import ExternalStorageReference

        message_type = ExternalStorageReference.DESCRIPTOR.full_name.encode()
        out = list(payloads)
        seen = 0
        spent = 0
        driver: AnyDriver | None = None
        for index, payload in enumerate(payloads):
            if payload.metadata.get("messageType") != message_type:
                continue
            seen += 1
            if seen > self.max_references or spent >= self.max_bytes:
                break
            try:
                reference = json_format.Parse(payload.data, ExternalStorageReference())
            except (json_format.ParseError, UnicodeDecodeError):
                continue
            if driver is None:
                driver = await self._driver(namespace)
            if reference.driver_name != driver.name():
                continue
            room = min(self.limit, self.max_bytes - spent)
            try:
                [stored] = await driver.retrieve_within(
                    [StorageDriverClaim(dict(reference.claim_data))], room
                )
            except PayloadStoreError:
                continue
            if stored is not None:
                out[index] = stored
                spent += stored.ByteSize()
        return out


def reference_resolver_from_env(env: Mapping[str, str] | None = None) -> ReferenceResolver | None:
    """The codec server's resolver when a payload store is configured, else None.

    Raises:
        PayloadStoreConfigError: See :meth:`PayloadStoreConfig.from_env`.
    """
    config = PayloadStoreConfig.from_env(env)
    return ReferenceResolver(config) if config is not None else None
