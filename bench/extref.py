"""PROTOTYPE (bench only): the generic workflow's run input by external-storage reference.

Issue 12 (P1/P2) asks for a pinning that costs fewer history bytes than the definition travelling
in full in the run input. This measures one: the run input (definition, input, options) is written
to the product's payload store (:class:`starter.payload_store.FilesystemDriver`, content-addressed:
the same definition and input are stored once per namespace) and the history holds the SDK's
``ExternalStorageReference`` instead. Everything else (activity inputs and results, the workflow
result, markers, search attributes) stays inline.

It uses the SDK's external storage (:class:`temporalio.converter.ExternalStorage`) with threshold 0
and a :attr:`~temporalio.converter.ExternalStorage.driver_selector` that picks the driver only for
a workflow *start* input of the generic workflow: the store target is a
:class:`~temporalio.converter.StorageDriverWorkflowInfo` without a run id (a client starting a run,
or a workflow starting a child; a running workflow's own commands carry its run id) whose type is
the generic workflow's, and the payload is a JSON object with a ``definition``. The client
starting runs and the worker (:mod:`bench.bench_worker` ``--extref-store``) use the same converter,
so the worker resolves the reference before the workflow sees its input.

A leaner reference (``lean=True``, :class:`LeanFilesystemDriver`): the same store and blobs, but
the driver is named ``fs`` and its claim is only the digest (the namespace is the one the driver is
bound to), to measure how much of the reference is the product driver's claim and how much the
SDK's reference format (its ``json/protobuf`` metadata and message type).


The product stores run inputs by reference itself since (``WFA_PAYLOAD_STORE_RUN_INPUT=always``),
with the rule this selector uses (:func:`starter.payload_store.is_run_start_input`); what stays a
prototype here is the leaner reference (the result by reference is the product's too now:
``WFA_PAYLOAD_STORE_RUN_RESULT=always``, which A-xsr measures). :mod:`bench.history_breakdown`
``--extref`` measures them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverSelectContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
)

from starter.payload_store import FilesystemDriver, PayloadStoreError, is_run_start_input
from workflows.generic import WORKFLOW_NAME

__all__ = [
    "LeanFilesystemDriver",
    "run_input_selector",
    "start_input_converter",
]


class LeanFilesystemDriver(StorageDriver):
    """:class:`FilesystemDriver`'s blobs with a shorter reference: name ``fs``, claim ``{"d": digest}``."""

    NAME = "fs"

    def __init__(self, inner: FilesystemDriver, namespace: str) -> None:
        self.inner = inner
        self.namespace = namespace

    def name(self) -> str:
        """The driver's name, recorded in every reference."""
        return self.NAME

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Stores through the product driver; keeps only the digest of its claims."""
        claims = await self.inner.store(context, payloads)
        for claim in claims:
            if claim.claim_data["namespace"] != self.namespace:
                raise PayloadStoreError(f"{self.NAME}: bound to namespace {self.namespace!r}, not another")
        return [StorageDriverClaim({"d": claim.claim_data["digest"]}) for claim in claims]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Reads (and verifies) through the product driver, in the bound namespace."""
        full = [
            StorageDriverClaim(
                {
                    "namespace": self.namespace,
                    "digest": claim.claim_data.get("d", ""),
                    "hash_algorithm": "sha256",
                }
            )
            for claim in claims
        ]
        return await self.inner.retrieve(context, full)


def run_input_selector(
    driver: StorageDriver,
) -> Callable[[StorageDriverSelectContext, Payload], StorageDriver | None]:
    """A ``driver_selector`` storing only the start input of a generic workflow run."""

    def select(context: StorageDriverSelectContext, payload: Payload) -> StorageDriver | None:
        target = context.target
        if not isinstance(target, StorageDriverWorkflowInfo) or target.type != WORKFLOW_NAME:
            return None
        if target.run_id is None and is_run_start_input(target, payload):  # the product's rule
            return driver
        return None

    return select


def start_input_converter(
    root: str | Path, namespace: str = "default", *, lean: bool = False
) -> DataConverter:
    """pydantic's data converter, with the generic workflow's start input stored under ``root``
    (referenced through :class:`LeanFilesystemDriver` when ``lean``); reads both drivers'
    references."""
    driver = FilesystemDriver(root, namespace=namespace)
    lean_driver = LeanFilesystemDriver(driver, namespace)
    storage = ExternalStorage(
        drivers=[driver, lean_driver],
        driver_selector=run_input_selector(lean_driver if lean else driver),
        payload_size_threshold=0,
    )
    return dataclasses.replace(pydantic_data_converter, external_storage=storage)
