"""One benchmark worker process: ``python -m bench.bench_worker ADDRESS TASK_QUEUE [--cprofile OUT]``.

Serves the generic workflow, the baseline workflow, the A-co prototype (:mod:`bench.proto_coalesce`)
and every action activity (through
:func:`worker.build_worker`, i.e. the product's sandbox configuration) on ``TASK_QUEUE``. Prints
``READY`` once polling, runs until SIGTERM/SIGINT, then shuts down cleanly.

``--cprofile OUT`` profiles every thread (the asyncio loop and the workflow-task executor threads,
where workflow code runs) with cProfile, timed by each thread's CPU clock, and writes the merged stats to ``OUT`` on exit; the
benchmark then reports CPU with the profiler's overhead included, so use it for "where", not "how
much".

``--extref-store DIR`` connects with :func:`bench.extref.start_input_converter` (the generic
workflow's start input by reference into ``DIR``), so the worker reads the references that
:mod:`bench.history_breakdown` ``--extref`` starts runs with; ``--extref-result`` serves with the
product's converter instead, with ``WFA_PAYLOAD_STORE=fs:DIR``, ``WFA_PAYLOAD_STORE_RUN_INPUT=always``
and ``WFA_PAYLOAD_STORE_RUN_RESULT=always`` (results by reference).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.approval_baseline import ApprovalBaselineWorkflow
from bench.baseline import BaselineWorkflow
from bench.proto_coalesce import CoalescedRunDefinitionWorkflow
from bench.proto_sandboxed import SandboxedRunDefinitionWorkflow
from worker import build_worker

_profiles: list[cProfile.Profile] = []
_profiles_lock = threading.Lock()


def _start_thread_profiler(*_: Any) -> None:
    """``threading.setprofile`` hook: replaces itself with a cProfile profiler for the new thread."""
    profile = cProfile.Profile(time.thread_time)  # CPU time of this thread, not wall time
    with _profiles_lock:
        _profiles.append(profile)
    profile.enable()


def _write_profiles(out: str) -> None:
    with _profiles_lock:
        profiles = list(_profiles)
    stats: pstats.Stats | None = None
    for profile in profiles:
        profile.disable()  # only stops the calling thread's hook; the others are idle by now
        profile.create_stats()
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(out)


async def serve(
    address: str,
    namespace: str,
    task_queue: str,
    max_cached: int | None = None,
    *,
    extref_store: str | None = None,
    extref_result: bool = False,
    payload_store: str | None = None,
    payload_store_result: bool = False,
) -> None:
    converter = pydantic_data_converter
    if payload_store is not None:
        from starter.codec import data_converter

        # The product's converter, as worker.py builds it, with WFA_PAYLOAD_STORE=fs:<payload_store>.
        env = {"WFA_PAYLOAD_STORE": f"fs:{payload_store}"}
        if payload_store_result:
            env["WFA_PAYLOAD_STORE_RUN_RESULT"] = "always"
        converter = data_converter(env, namespace=namespace)
    elif extref_store is not None and extref_result:
        from starter.codec import data_converter
        from starter.payload_store import RUN_INPUT_ENV, RUN_RESULT_ENV, STORE_ENV

        # The product's converter with the run input and the result by reference.
        converter = data_converter(
            {STORE_ENV: f"fs:{extref_store}", RUN_INPUT_ENV: "always", RUN_RESULT_ENV: "always"},
            namespace=namespace,
        )
    elif extref_store is not None:
        from bench.extref import start_input_converter

        converter = start_input_converter(extref_store, namespace)
    client = await Client.connect(address, namespace=namespace, data_converter=converter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient() as http_client:
        worker = build_worker(
            client,
            task_queue,
            http_client,
            extra_workflows=[
                BaselineWorkflow,
                CoalescedRunDefinitionWorkflow,
                SandboxedRunDefinitionWorkflow,
                ApprovalBaselineWorkflow,
            ],
            max_cached_workflows=max_cached,
        )
        async with worker:
            print("READY", flush=True)
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_worker")
    parser.add_argument("address")
    parser.add_argument("task_queue")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--max-cached-workflows", type=int, help="the worker's sticky cache size")
    parser.add_argument("--cprofile", metavar="OUT", help="profile all threads with cProfile into OUT")
    parser.add_argument(
        "--extref-store", metavar="DIR", help="read run inputs stored by reference in DIR (bench.extref)"
    )
    parser.add_argument(
        "--extref-result",
        action="store_true",
        help="with --extref-store: the product's converter, run inputs and results by reference",
    )
    parser.add_argument(
        "--payload-store", metavar="DIR", help="the product's converter with WFA_PAYLOAD_STORE=fs:DIR"
    )
    parser.add_argument(
        "--payload-store-result",
        action="store_true",
        help="with --payload-store: WFA_PAYLOAD_STORE_RUN_RESULT=always (run results by reference)",
    )
    args = parser.parse_args(argv)
    if args.cprofile:
        threading.setprofile(_start_thread_profiler)
        _start_thread_profiler()
    try:
        asyncio.run(
            serve(
                args.address,
                args.namespace,
                args.task_queue,
                args.max_cached_workflows,
                extref_store=args.extref_store,
                extref_result=args.extref_result,
                payload_store=args.payload_store,
                payload_store_result=args.payload_store_result,
            )
        )
    finally:
        if args.cprofile:
            threading.setprofile(None)  # type: ignore[arg-type]
            _write_profiles(args.cprofile)
    sys.stdout.flush()
    # Skip interpreter finalisation: the SDK's native threads can abort it (PyGILState_Release).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
