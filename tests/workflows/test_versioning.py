"""Worker Deployment Versioning on the dev server: a run waiting at an approval on build 1 moves to
build 2 when build 2 becomes the deployment's current version (the generic workflow is auto-upgrade,
with ``workflow.patched`` and the replay suite as the safety net), and a rollback sends new runs
back to build 1. Nothing is stranded on the build that is no longer current."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from temporalio.api.enums.v1 import RoutingConfigUpdateState
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError

from interpreter.state import RunState
from tests.workflows.support import Handle, definition, eventually, start, status, unique
from worker import build_worker, deployment_from_env


async def _make_current(client: Client, version: WorkerDeploymentVersion) -> None:
    """Sets the deployment's current version, once the server has seen the version's pollers."""

    async def attempt() -> bool:
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace,
                    deployment_name=version.deployment_name,
                    build_id=version.build_id,
                    identity="test",
                )
            )
        except RPCError:
            return False  # the version is not registered yet (its worker has not polled)
        return True

    await eventually(attempt, bool, timeout=60, interval=0.5, what=f"{version.build_id} current")

    async def propagated() -> bool:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=version.deployment_name
            )
        )
        info = described.worker_deployment_info
        return (
            info.routing_config.current_deployment_version.build_id == version.build_id
            and info.routing_config_update_state
            == RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_COMPLETED
        )

    # The task queues learn the new routing asynchronously (the server's own deployment workflow
    # does it, slow on a server busy with a whole suite): wait until every one has it.
    await eventually(propagated, bool, timeout=240, interval=0.5, what=f"{version.build_id} routed")


async def _build_of(handle: Handle) -> str:
    described = await handle.describe()
    info = described.raw_description.workflow_execution_info.versioning_info
    return str(info.deployment_version.build_id)


async def test_a_waiting_run_moves_to_the_new_build_and_a_rollback_sends_new_runs_back(
    client: Client, task_queue: str, http_client: httpx.AsyncClient
) -> None:
    name = unique("deploy")
    v1 = WorkerDeploymentVersion(deployment_name=name, build_id="build-1")
    v2 = WorkerDeploymentVersion(deployment_name=name, build_id="build-2")
    doc = definition(
        unique("upgrade"),
        [
            {"id": "before", "type": "task", "action": "echo", "input": {"value": 1}},
            {"id": "ok", "type": "approval", "approvers": ["manager"]},
            {"id": "after", "type": "task", "action": "echo", "input": {"value": 2}},
        ],
    )
    no_grace = timedelta(0)
    async with build_worker(
        client, task_queue, http_client, deployment=v1, graceful_shutdown_timeout=no_grace
    ):
        await _make_current(client, v1)
        waiting = await start(client, task_queue, doc)
        await eventually(lambda: status(waiting), lambda s: bool(s.pending_approvals), timeout=30)
        assert await _build_of(waiting) == "build-1"

        async with build_worker(
            client, task_queue, http_client, deployment=v2, graceful_shutdown_timeout=no_grace
        ):
            await _make_current(client, v2)  # the rollout
            await waiting.signal("approve", {"actor": "manager"})
            result = await waiting.result()
            assert result.state == RunState.COMPLETED
            assert await _build_of(waiting) == "build-2"  # upgraded at its next workflow task

            await _make_current(client, v1)  # the rollback
            again = await start(client, task_queue, doc)
            await eventually(lambda: status(again), lambda s: bool(s.pending_approvals), timeout=30)
            assert await _build_of(again) == "build-1"
            await again.signal("approve", {"actor": "manager"})
            assert (await again.result()).state == RunState.COMPLETED


def test_the_deployment_comes_from_both_variables_or_neither() -> None:
    assert deployment_from_env({}) is None
    version = deployment_from_env({"WFA_DEPLOYMENT_NAME": "wfa", "WFA_BUILD_ID": "2026-12-01"})
    assert version == WorkerDeploymentVersion(deployment_name="wfa", build_id="2026-12-01")
    with pytest.raises(ValueError, match="WFA_DEPLOYMENT_NAME"):
        deployment_from_env({"WFA_BUILD_ID": "x"})
