"""What an attacker's probe of ``wfa`` found, each as a real process: a Ctrl-C that printed a
traceback or lost the run it had just started, settings that stopped every command or filled the
memory, a key file lost to its own key set, output that could not be written reported as a bug.
Each now ends with its documented exit code and a message, never a traceback."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starter.cli import _moment
from starter.client import FlowClient
from tests.helpers.wfa_process import ROOT, run_wfa, wfa_env
from tests.workflows.support import eventually, unique

WAITING = {"steps": [{"id": "ok", "type": "approval", "approvers": ["boss"], "timeout": "1h"}]}


def _env(temporal_env: WorkflowEnvironment, task_queue: str, **extra: str) -> dict[str, str]:
    return wfa_env(temporal_env.client.service_client.config.target_host, task_queue, **extra)


@pytest.mark.parametrize("gap", [0.0, 0.02, 0.3], ids=["together", "20ms", "300ms"])
async def test_ctrl_c_twice_names_the_run_just_started_and_shows_no_traceback(
    temporal_env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    gap: float,
) -> None:
    """``wfa start FILE --wait --json``, interrupted while it waits: the run's generated id was
    printed nowhere (exit 130, "interrupted"), and a second Ctrl-C printed a traceback; on a busy
    machine (a CI run) asyncio's shutdown after them waited for good: a Ctrl-C now leaves at once."""
    name = unique("interrupted")
    path = tmp_path / "wait.json"
    path.write_text(json.dumps({"name": name, **WAITING}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter",
        "start",
        str(path),
        "--wait",
        "--json",
        cwd=ROOT,
        env=_env(temporal_env, task_queue),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    flows = FlowClient(client, task_queue=task_queue)

    async def started() -> list[str]:
        return [run.workflow_id for run in await flows.list_runs(definition=name)]

    try:
        ids = await eventually(started, bool, timeout=60, what="the run started")
        await asyncio.sleep(0.5)  # waiting for its result now
        process.send_signal(signal.SIGINT)
        await asyncio.sleep(gap)
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    message = err.decode()
    assert process.returncode == 130, message
    assert "Traceback" not in message, message
    assert f"the run goes on (wfa status {ids[0]})" in message, message
    assert out == b""
    await client.get_workflow_handle(ids[0]).terminate("test over")


async def test_settings_that_stopped_every_command_or_filled_memory_are_bad_input(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    definition = tmp_path / "ok.json"
    definition.write_text(json.dumps({"name": "probe-ok", "steps": [{"id": "s", "type": "succeed"}]}))
    env = _env(temporal_env, task_queue)
    # A DATABASE_URL no URL parser reads: `--help` and `validate` do not need it; what does says so.
    broken = {**env, "DATABASE_URL": "postgresql://u:p@[::1"}
    for args in (("--help",), ("validate", str(definition))):
        outcome = await run_wfa(*args, env=broken)
        assert outcome.code == 0, outcome.describe()
        assert outcome.clean, outcome.describe()
    outcome = await run_wfa("definitions", "list", env=broken)
    assert outcome.code == 2, outcome.describe()
    assert outcome.clean, outcome.describe()
    # An endless, a nested or an ambiguous keys file, and a key id given twice: exit 2, naming it.
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    twice = tmp_path / "twice.json"
    key = "A" * 43 + "="
    twice.write_text(f'{{"current": "k1", "keys": {{"k1": "{key}", "k1": "{"B" * 43}="}}}}')
    for variable, value, named in (
        ("WFA_PAYLOAD_KEYS_FILE", "/dev/zero", "WFA_PAYLOAD_KEYS_FILE"),
        ("WFA_PAYLOAD_KEYS_FILE", str(nested), "WFA_PAYLOAD_KEYS_FILE"),
        ("WFA_PAYLOAD_KEYS_FILE", str(twice), "'k1' is given twice"),
        ("WFA_PAYLOAD_KEYS", f"k1={key},k1={'B' * 43}=", "'k1' is given twice"),
    ):
        outcome = await run_wfa("status", "nothing", env={**env, variable: value})
        assert outcome.code == 2, outcome.describe()
        assert outcome.clean, outcome.describe()
        assert named in outcome.err, outcome.describe()
    # gRPC metadata no server could be sent: the settings (2), not an unreachable server (3).
    outcome = await run_wfa("status", "nothing", env={**env, "TEMPORAL_GRPC_META_X": "\x01"})
    assert outcome.code == 2, outcome.describe()
    assert outcome.clean, outcome.describe()
    assert "gRPC metadata" in outcome.err, outcome.describe()


async def test_empty_file_and_profile_arguments_are_refused_not_read_as_defaults(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    env = _env(temporal_env, task_queue)
    for args in (
        ("validate", ""),
        ("start", ""),
        ("diagram", ""),
        ("definitions", "register", "", "--author", "ann"),
        ("keys", "generate", "--private", "", "--jwks", str(tmp_path / "set.json")),
        ("status", "nothing", "--profile", ""),
        ("status", "nothing", "--config-file", " "),
    ):
        outcome = await run_wfa(*args, env=env)
        assert outcome.code == 2, outcome.describe()
        assert outcome.clean, outcome.describe()
        assert "must not be empty" in outcome.err, outcome.describe()
    definition = tmp_path / "ok.json"
    definition.write_text(json.dumps({"name": "probe-ok", "steps": [{"id": "s", "type": "succeed"}]}))
    outcome = await run_wfa("start", str(definition), "--timeout", "5", env=env)  # (was ignored)
    assert outcome.code == 2, outcome.describe()
    assert "--timeout bounds --wait only" in outcome.err, outcome.describe()


async def test_keys_generate_never_loses_the_private_key_it_made(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    env = _env(temporal_env, task_queue)
    same = tmp_path / "k.jwk"
    outcome = await run_wfa("keys", "generate", "--private", str(same), "--jwks", str(same), env=env)
    assert outcome.code == 2, outcome.describe()
    assert outcome.clean, outcome.describe()
    assert "the same file" in outcome.err
    assert not same.exists()  # nothing written
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    outcome = await run_wfa(
        "keys", "generate", "--private", str(tmp_path / "p.jwk"), "--jwks", str(nested), env=env
    )
    assert outcome.code == 2, outcome.describe()
    assert outcome.clean, outcome.describe()
    assert not (tmp_path / "p.jwk").exists()


async def test_output_that_cannot_be_written_after_a_decision_is_exit_3_saying_so(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, worker: Worker
) -> None:
    flows = FlowClient(client, task_queue=task_queue)
    run = await flows.start_run({"name": unique("full"), **WAITING})
    env = _env(temporal_env, task_queue)
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'exec "$0" -m starter approve "$1" --actor boss > /dev/full',
        sys.executable,
        run.workflow_id,
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    message = err.decode()
    assert process.returncode == 3, message  # was 70, "a bug"
    assert "could not write to standard output" in message, message
    assert "Traceback" not in message, message
    assert (await flows.result(run.workflow_id, timeout=60)).state == "completed"  # the decision went


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2020-01-01Z", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01+05:00", datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        ("2020-01-01T10:00Z", datetime(2020, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_a_date_with_its_offset_is_its_midnight_there(text: str, moment: datetime) -> None:
    """A probe: ``--start 2020-01-01Z`` was refused as having no offset (Python reads the date
    without it, and ``+05:00`` after a date as 05:00 without one)."""
    assert _moment(text) == moment
    assert _moment(text).utcoffset() == moment.utcoffset()
