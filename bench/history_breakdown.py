"""Where a run's history bytes go: ``python -m bench.history_breakdown [--json out.json]``.

Starts one dev server and one benchmark worker (:mod:`bench.bench_worker`, the product's sandbox
configuration), runs one run of each of ``bench.run``'s variants A (the generic workflow on the
5-step definition, started with the search attributes and fairness key a starter sets, at the build's
interpreter generation), A-g0 (A at
generation 0: every patch asked, as runs were started before the generations), A-rf and A-rn (the same with
``RunOptions.result_steps`` ``full`` and ``none``) and B (the hand-written baseline), and prints, per
run, the bytes of every event type and of every payload in the history: the run input, each
activity's input and result, the workflow result, the search attributes set at start or upserted,
marker details and headers. Bytes are the serialized protobuf sizes, as ``bench.run`` counts them
(``History.ByteSize()``), so per-event figures add up to the run's total.

A-fc is A started by ``FlowClient.start_run`` itself, memo and Web UI summary and details included
(``bench.run``'s A, like the baseline, has none of those).

``--extref`` adds A-xs and A-xs-rn (A and A-rn with the run input stored by reference, as the
product does with ``WFA_PAYLOAD_STORE=fs:<dir>`` and ``WFA_PAYLOAD_STORE_RUN_INPUT=always``: the
starting client's converter is :func:`starter.payload_store.PayloadStoreConfig.external_storage`'s;
the worker reads references through the :mod:`bench.extref` prototype's converter, whose driver
has the product driver's name), A-xsl-rn (A-xs-rn with the prototype's leaner reference), A-xsr
(A-xs whose result is stored by reference too, by a second worker with
``WFA_PAYLOAD_STORE_RUN_RESULT=always``), A-fc-xsr (A-xsr started by ``FlowClient.start_run``), a row of
ratios to B, and what the store holds (one blob per distinct payload: A-xs
runs twice, A-xsl-rn has A-xs-rn's input, A-xsr A-xs's).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.baseline import STEPS, definition_data, expected_output
from bench.extref import start_input_converter
from bench.run import A_G0, A_RF, A_RN, A, B, Server, Variant, WorkerProcess, Workload
from starter.client import FlowClient
from starter.payload_store import RUN_INPUT_ENV, STORE_ENV, PayloadStoreConfig

A_XS = dataclasses.replace(
    A, key="A-xs", label="generic, run input by reference (WFA_PAYLOAD_STORE_RUN_INPUT)"
)
A_XS_RN = dataclasses.replace(
    A_RN,
    key="A-xs-rn",
    label="generic, result_steps=none, run input by reference (WFA_PAYLOAD_STORE_RUN_INPUT)",
)
A_XSL_RN = dataclasses.replace(
    A_RN, key="A-xsl-rn", label="generic, result_steps=none, PROTOTYPE: run input by a leaner reference"
)
A_XSR = dataclasses.replace(
    A,
    key="A-xsr",
    label="generic, run input and result by reference (WFA_PAYLOAD_STORE_RUN_INPUT, _RUN_RESULT)",
)
EXTREF = frozenset({A_XS.key, A_XS_RN.key, A_XSL_RN.key})


def _payloads(msg: Message, path: str, out: dict[str, int]) -> None:
    """Adds the size of every payload under ``msg`` to ``out``, keyed by where it sits."""
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        name = f"{path}.{fd.name}" if path else fd.name
        if fd.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Payload):
                    out[f"{name}[{key}]"] = out.get(f"{name}[{key}]", 0) + item.ByteSize()
                elif isinstance(item, Message):
                    _payloads(item, f"{name}[{key}]", out)
            continue
        repeated = not isinstance(value, Message)
        items = list(value) if repeated else [value]
        for i, item in enumerate(items):
            where = f"{name}[{i}]" if repeated else name
            if isinstance(item, Payload):
                out[where] = out.get(where, 0) + item.ByteSize()
            elif isinstance(item, Payloads):
                out[where] = out.get(where, 0) + sum(p.ByteSize() for p in item.payloads)
            else:
                _payloads(item, where, out)


def breakdown(history: History) -> dict[str, Any]:
    """Bytes per event type and per payload (``event#n type: field``) of one history."""
    by_type: dict[str, int] = {}
    counts: dict[str, int] = {}
    payloads: dict[str, int] = {}
    for e in history.events:
        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower()
        by_type[name] = by_type.get(name, 0) + e.ByteSize()
        counts[name] = counts.get(name, 0) + 1
        attrs = e.WhichOneof("attributes")
        if attrs is None:
            continue
        found: dict[str, int] = {}
        _payloads(getattr(e, attrs), "", found)
        for where, size in found.items():
            payloads[f"#{e.event_id} {name}: {where}"] = size
    return {
        "total": history.ByteSize(),
        "events": len(history.events),
        "bytes_by_event_type": by_type,
        "events_by_type": counts,
        "payload_bytes": payloads,
    }


A_FC = "A-fc"
"""A started by ``FlowClient.start_run``, as a service starts runs: besides A's search attributes
and fairness key, the memo (where the definition came from) and the Web UI's summary and
details (``bench.run``'s A leaves those out, as the hand-written baseline has none)."""
A_FC_XSR = "A-fc-xsr"
"""A-fc through the product's converter with ``WFA_PAYLOAD_STORE_RUN_INPUT=always``, on the worker
with ``WFA_PAYLOAD_STORE_RUN_RESULT=always`` (A-xsr started by ``FlowClient.start_run``)."""
NO_REGISTRY = "postgresql://unused@127.0.0.1:1/unused"
"""FlowClient's database: an inline definition never opens the registry."""


async def flow_run(client: Client, tq: str) -> History:
    """One run of the 5-step definition started by ``FlowClient.start_run``; its history."""
    flows = FlowClient(client, task_queue=tq, database=NO_REGISTRY)
    wf_id = f"breakdown-{uuid.uuid4().hex[:12]}"  # the same length as one_run's
    started = await flows.start_run(definition_data(), {"n": 7}, workflow_id=wf_id)
    result = await flows.result(started.workflow_id, timeout=120)
    if result.output != expected_output(7) or len(result.steps) != STEPS:
        raise AssertionError(f"{wf_id}: {result!r}")
    fetched = await client.get_workflow_handle(wf_id).fetch_history()
    return History(events=fetched.events)


async def one_run(client: Client, workload: Workload, variant: Variant, tq: str) -> History:
    wf_id = f"breakdown-{uuid.uuid4().hex[:12]}"  # the same length for every variant (it is in each activity's input)
    handle = await workload.start(client, variant, 7, wf_id, tq)
    workload.check(variant, 7, await handle.result())
    fetched = await client.get_workflow_handle(wf_id).fetch_history()
    return History(events=fetched.events)


def print_breakdown(results: dict[str, dict[str, Any]]) -> None:
    keys = list(results)
    types = sorted({t for r in results.values() for t in r["bytes_by_event_type"]})
    print(f"{'event type':<45}" + "".join(f"{k:>16}" for k in keys))
    for t in types:
        cells = "".join(
            f"{r['bytes_by_event_type'].get(t, 0):>10} ({r['events_by_type'].get(t, 0):>2})"
            for r in results.values()
        )
        print(f"{t:<45}{cells}")
    print(
        f"{'total bytes (events)':<45}"
        + "".join(f"{r['total']:>10} ({r['events']:>2})" for r in results.values())
    )
    if "B" in results:
        base = results["B"]["total"]
        print(f"{'ratio to B':<45}" + "".join(f"{r['total'] / base:>15.3f}x" for r in results.values()))
    for k, r in results.items():
        print(f"\npayloads of {k} (bytes):")
        for where, size in r["payload_bytes"].items():
            print(f"  {size:>6}  {where}")


def run_input_converter(root: Path, namespace: str = "default") -> Any:
    """pydantic's data converter with the product's external storage as
    ``WFA_PAYLOAD_STORE=fs:<root>`` and ``WFA_PAYLOAD_STORE_RUN_INPUT=always`` configure it."""
    config = PayloadStoreConfig.from_env({STORE_ENV: f"fs:{root}", RUN_INPUT_ENV: "always"})
    assert config is not None
    return dataclasses.replace(pydantic_data_converter, external_storage=config.external_storage(namespace))


def store_summary(root: Path) -> dict[str, Any]:
    """The blobs the prototype's store holds (files under ``root``) and their sizes."""
    sizes = sorted(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"blobs": len(sizes), "blob_bytes": sizes}


async def amain(extref: bool = False) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="wfa-breakdown-") as tmp:
        server = Server(Path(tmp), in_memory=True)
        await server.start()
        store = Path(tmp) / "payloads"
        try:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            by_ref, by_lean_ref = client, client
            if extref:
                by_ref = await Client.connect(server.address, data_converter=run_input_converter(store))
                by_lean_ref = await Client.connect(
                    server.address, data_converter=start_input_converter(store, lean=True)
                )
            clients = {A_XS.key: by_ref, A_XS_RN.key: by_ref, A_XSL_RN.key: by_lean_ref}
            tq = f"bench-{uuid.uuid4().hex[:8]}"  # the same length as bench.run's task queues
            worker = WorkerProcess(
                server.address,
                tq,
                None,
                Path(tmp) / "pycache",
                Path(tmp),
                extra_args=["--extref-store", str(store)] if extref else (),
            )
            await worker.start()
            try:
                workload = Workload()
                variants = (
                    (A, A_G0, A_RF, A_RN, A_XS, A_XS_RN, A_XSL_RN, B) if extref else (A, A_G0, A_RF, A_RN, B)
                )
                results = {
                    v.key: breakdown(await one_run(clients.get(v.key, client), workload, v, tq))
                    for v in variants
                }
                results = {**results, A_FC: breakdown(await flow_run(client, tq)), "B": results.pop("B")}
                if extref:
                    # The same input again: no new blob (A-xsl-rn's input is A-xs-rn's: no new blob either).
                    await one_run(by_ref, workload, A_XS, tq)
            finally:
                await worker.stop()
            if extref:
                # A-xsr needs a worker that stores results (its own task queue, of the same length).
                tq = f"bench-{uuid.uuid4().hex[:8]}"
                worker = WorkerProcess(
                    server.address,
                    tq,
                    None,
                    Path(tmp) / "pycache",
                    Path(tmp),
                    extra_args=["--extref-store", str(store), "--extref-result"],
                )
                await worker.start()
                try:
                    results = {
                        **{k: v for k, v in results.items() if k != "B"},
                        A_XSR.key: breakdown(await one_run(by_ref, workload, A_XSR, tq)),
                        A_FC_XSR: breakdown(await flow_run(by_ref, tq)),
                        "B": results["B"],
                    }
                finally:
                    await worker.stop()
                # A-xsr's input is A-xs's: its result is the only new blob; A-fc-xsr adds its input
                # (FlowClient's options differ) and its result.
                results["store"] = {**store_summary(store), "runs_by_reference": len(EXTREF) + 3}
        finally:
            await server.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history_breakdown", description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the breakdown as JSON")
    p.add_argument(
        "--extref",
        action="store_true",
        help="add A-xs and A-xs-rn (run input by reference, WFA_PAYLOAD_STORE_RUN_INPUT=always) and the prototypes",
    )
    args = p.parse_args(argv)
    results = asyncio.run(amain(args.extref))
    store = results.pop("store", None)
    print_breakdown(results)
    if store is not None:
        print(
            f"\nstore: {store['blobs']} blob(s) for {store['runs_by_reference']} runs started by reference,"
            f" bytes {store['blob_bytes']}"
        )
        results["store"] = store
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
