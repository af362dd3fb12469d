"""Your own actions: the example package in examples/custom-action found through its entry point
(a dist-info on ``sys.path``, nothing installed) or ``WFA_ACTION_MODULES``, validated like a built-in
action, and run end to end on the dev server, also on a second worker of its own task queue."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.plugins import plugin_activities
from interpreter.actions import ActionPluginError, load_action_plugins, unregister_action_plugins
from interpreter.state import StepStatus
from interpreter.validate import DefinitionError, load_definition
from starter.cli import run as wfa
from starter.plugins import ACTION_MODULES_ENV, load_configured_action_plugins
from tests.helpers.worker_process import exit_code, spawn_worker
from tests.workflows.support import record, start, unique
from worker import build_worker

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom-action"
DEFINITION = EXAMPLE / "greeting.json"


@pytest.fixture
def package_on_path(tmp_path: Path) -> Iterator[Path]:
    """The example's source on ``sys.path`` (not installed), forgotten afterwards."""
    source = str(EXAMPLE / "src")
    sys.path.insert(0, source)
    importlib.invalidate_caches()
    yield tmp_path
    sys.path.remove(source)
    for name in [m for m in sys.modules if m == "wfa_greeting" or m.startswith("wfa_greeting.")]:
        del sys.modules[name]
    unregister_action_plugins()


@pytest.fixture
def installed(package_on_path: Path) -> Iterator[None]:
    """What ``pip install examples/custom-action`` leaves for discovery: a dist-info with the entry
    points of its pyproject, on ``sys.path``."""
    dist = package_on_path / "wfa_greeting-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wfa-greeting\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[wfa.actions]\ngreeting = wfa_greeting.spec:GREETING\n")
    sys.path.insert(0, str(package_on_path))
    importlib.invalidate_caches()
    yield
    sys.path.remove(str(package_on_path))


def document(**step: Any) -> dict[str, Any]:
    data = json.loads(DEFINITION.read_text())
    data["steps"][0].update(step)
    return data


@pytest.mark.usefixtures("installed")
def test_the_entry_point_is_found_and_validated_like_a_built_in_action() -> None:
    plugins = load_action_plugins()
    assert [p.name for p in plugins] == ["greeting"]
    # Validation imported the models only; the implementation is the workers' business.
    assert "wfa_greeting.spec" in sys.modules
    assert "wfa_greeting.impl" not in sys.modules
    load_definition(document())
    bad = document(input={"name": "Ada", "language": "es", "shout": True})
    with pytest.raises(DefinitionError) as info:
        load_definition(bad)
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["$.steps[0].input.language", "$.steps[0].input.shout"]


@pytest.mark.usefixtures("package_on_path")
def test_wfa_validate_sees_modules_of_wfa_action_modules(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ACTION_MODULES_ENV, raising=False)
    assert wfa(["validate", str(DEFINITION)]) == 2
    assert "unknown action 'greeting'" in capsys.readouterr().err
    monkeypatch.setenv(ACTION_MODULES_ENV, "wfa_greeting.spec")
    assert wfa(["validate", str(DEFINITION)]) == 0
    monkeypatch.setenv(ACTION_MODULES_ENV, "wfa_greeting.nowhere")
    unregister_action_plugins()
    assert wfa(["validate", str(DEFINITION)]) == 2
    assert "cannot be loaded: ModuleNotFoundError" in capsys.readouterr().err


@pytest.mark.usefixtures("package_on_path")
def test_a_plugin_may_not_shadow_a_built_in_action() -> None:
    from wfa_greeting.spec import GreetingInput

    from interpreter.actions import ActionPlugin, register_action_plugin

    with pytest.raises(ActionPluginError, match="shadow"):
        register_action_plugin(ActionPlugin(name="http", input_model=GreetingInput, function="x:y"))


@pytest.mark.usefixtures("installed")
async def test_the_custom_action_runs_on_the_runs_worker_and_on_its_own_task_queue(
    client: Client, task_queue: str
) -> None:
    load_configured_action_plugins({})
    team_queue = f"team-greetings-{uuid4().hex[:8]}"
    steps = [
        {**document()["steps"][0], "task_queue": team_queue},
        {
            "id": "again",
            "type": "task",
            "action": "greeting",
            "input": {"name": "{{ input.name }}", "times": 2},
        },
    ]
    definition = {**document(), "name": unique("custom-greeting"), "steps": steps}
    async with (
        httpx.AsyncClient() as http_client,
        build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
        # The team's own worker: only its actions, on its own queue.
        Worker(client, task_queue=team_queue, activities=plugin_activities()),
    ):
        handle = await start(client, task_queue, definition, {"name": "Ada"})
        result = await handle.result()
    greet, again = record(result, "greet"), record(result, "again")
    assert greet.status == again.status == StepStatus.COMPLETED
    assert greet.output == {"text": "Bonjour, Ada!", "task_queue": team_queue}
    assert again.output == {"text": "Hello, Ada! Hello, Ada!", "task_queue": task_queue}
    assert result.output == {"text": "Bonjour, Ada!"}


@pytest.mark.usefixtures("installed")
def test_a_step_on_another_queue_needs_a_schedule_to_close_timeout() -> None:
    load_action_plugins()
    data = document()
    data["defaults"] = {"timeouts": {"start_to_close": "30s"}}
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    [problem] = info.value.problems
    assert problem.path == "$.steps[0].timeouts"
    assert "schedule_to_close" in problem.message


ROOT = Path(__file__).resolve().parents[1]


def _worker_process(address: str, task_queue: str, log: Path, modules: str) -> subprocess.Popen[bytes]:
    """worker.py as a team runs it: its own queue, its package on the path, named by WFA_ACTION_MODULES."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "WORKER_SHUTDOWN_GRACE_S": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE / "src"), str(ROOT)]),
        ACTION_MODULES_ENV: modules,
    }
    return spawn_worker(env, log)


@pytest.mark.usefixtures("package_on_path")
async def test_the_teams_worker_py_serves_its_action_on_its_own_queue(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    team_queue = f"team-greetings-{uuid4().hex[:8]}"
    log = tmp_path / "team-worker.log"
    proc = _worker_process(client.service_client.config.target_host, team_queue, log, "wfa_greeting.spec")
    try:
        async with (
            httpx.AsyncClient() as http_client,
            # The run's own worker, built before the plugin is known: it does not serve `greeting`.
            build_worker(client, task_queue, http_client, graceful_shutdown_timeout=timedelta(0)),
        ):
            load_configured_action_plugins({ACTION_MODULES_ENV: "wfa_greeting.spec"})  # the starter's view
            assert "wfa_greeting.impl" not in sys.modules
            definition = {**document(task_queue=team_queue), "name": unique("custom-greeting")}
            handle = await start(client, task_queue, definition, {"name": "Grace"})
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await exit_code(proc, timeout=60)
    assert record(result, "greet").output == {"text": "Bonjour, Grace!", "task_queue": team_queue}
    assert code == 0
    assert "action plugins: greeting (wfa_greeting.impl:greet)" in log.read_text()


async def test_worker_py_refuses_to_start_with_a_broken_plugin(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    proc = _worker_process("127.0.0.1:1", "tq-none", log, "wfa_greeting.nowhere")
    assert await exit_code(proc, timeout=60) == 2
    assert "action plugin module 'wfa_greeting.nowhere' cannot be loaded" in log.read_text()
