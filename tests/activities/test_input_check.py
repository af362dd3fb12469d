"""Checking run input against an ``input_schema`` in processes of their own (activities.input_check).

The attacker is a tenant's schema that makes checking slow (``uniqueItems`` over thousands of
objects: every pair compared) and the caller's process that it would hold (the gateway, a worker,
a service's client). Every test uses real checking processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from activities import input_check
from activities.input_check import (
    InputCheckBusyError,
    InputCheckSettings,
    check_input,
    close_idle,
    input_check_settings,
)
from interpreter.input_schema import schema_input_problems

ROOT = Path(__file__).resolve().parents[2]
UNIQUE = {"type": "object", "properties": {"rows": {"type": "array", "uniqueItems": True}}}
SLOW = {"rows": [{"i": i, "tag": f"row-{i}"} for i in range(6000)]}
"""Tens of seconds of CPU for jsonschema against :data:`UNIQUE`."""


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return not _running(pid)


def _idle_pids() -> list[int]:
    return [process.popen.pid for process in input_check._IDLE]


async def test_the_answer_is_the_in_process_check_with_the_json_paths() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string"}, "items": {"type": "array", "items": {"type": "integer"}}},
    }
    bad = {"items": [1, "two", 3.5]}
    expected = [(p.path, p.message) for p in schema_input_problems(schema, bad)]
    assert len(expected) == 3
    assert await check_input(schema, bad) == expected
    assert await check_input(schema, {"email": "ann@example.com"}) == []
    long = await check_input(
        {"type": "object", "properties": {"x": {"maxLength": 1}}}, {"x": "z" * 5000}, most_chars=40
    )
    assert [len(message) for _, message in long] == [40]


async def test_a_slow_check_is_stopped_at_the_deadline_and_the_next_one_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    close_idle()
    assert await check_input(UNIQUE, {"rows": [1, 2]}) == []
    (warm,) = _idle_pids()
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "2")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await check_input(UNIQUE, SLOW)
    assert time.monotonic() - started < 15  # stopped, not run to its end (tens of seconds)
    assert not _running(warm), "the process of the stopped check still runs"
    assert _idle_pids() == []
    monkeypatch.delenv("WFA_INPUT_CHECK_DEADLINE")
    assert await check_input(UNIQUE, {"rows": [1, 1]}) == [("$.rows", "[1, 1] has non-unique elements")]


async def test_an_idle_process_that_died_is_replaced() -> None:
    close_idle()
    assert await check_input(UNIQUE, {"rows": []}) == []
    (idle,) = input_check._IDLE
    idle.popen.kill()
    idle.popen.wait()
    assert await check_input(UNIQUE, {"rows": [2, 2]}) == [("$.rows", "[2, 2] has non-unique elements")]
    assert idle.popen.pid not in _idle_pids()


async def test_one_tenants_slow_checks_leave_a_slot_to_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slots: tenant A's two slow checks take one slot (the second waits, then is refused as
    busy), and tenant B's check is answered while A's first still runs."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "4")
    first = asyncio.create_task(check_input(UNIQUE, SLOW, owner="A"))
    second = asyncio.create_task(check_input(UNIQUE, SLOW, owner="A"))
    await asyncio.sleep(0.2)
    assert await check_input(UNIQUE, {"rows": [3, 3]}, owner="B") == [
        ("$.rows", "[3, 3] has non-unique elements")
    ]
    assert not first.done(), "B waited for A's check"
    with pytest.raises(TimeoutError):
        await first
    with pytest.raises(InputCheckBusyError, match="at most 1 for one tenant"):
        await second


_CALLER = """
import asyncio, os, sys
from activities import input_check
schema = {"type": "object", "properties": {"rows": {"type": "array", "uniqueItems": True}}}
rows = [{"i": i, "tag": f"row-{i}"} for i in range(int(sys.argv[1]))]
async def main():
    if rows:
        task = asyncio.create_task(input_check.check_input(schema, {"rows": rows}))
        while not input_check._SLOTS or not any(s.busy for s in input_check._SLOTS.values()):
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)  # past its start: the process is checking
    else:
        await input_check.check_input(schema, {"rows": [1]})
    print(" ".join(str(p) for p in _children()), flush=True)
    os._exit(0)  # as a killed worker leaves: nothing closed

def _children():
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                found.append(int(entry))
    return found

asyncio.run(main())
"""


@pytest.mark.parametrize(("rows", "within"), [(0, 10.0), (6000, 20.0)], ids=["idle", "checking"])
def test_a_checking_process_leaves_when_its_caller_is_gone(rows: int, within: float) -> None:
    """A caller that leaves abruptly (``os._exit``, as a SIGKILLed worker) leaves no checking
    process behind: an idle one sees its socket close, a busy one is stopped by the kernel at the
    check's deadline (2 s here)."""
    env = {"PYTHONPATH": str(ROOT), "WFA_INPUT_CHECK_DEADLINE": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _CALLER, str(rows)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 1, done.stdout
    assert _wait_gone(pids[0], within), f"the checking process {pids[0]} outlived its caller"


def test_settings_come_from_the_environment_and_bad_values_name_the_variable() -> None:
    assert input_check_settings({}) == InputCheckSettings(20.0, 2)
    assert input_check_settings({"WFA_INPUT_CHECK_DEADLINE": "7.5", "WFA_INPUT_CHECK_SLOTS": "4"}) == (
        InputCheckSettings(7.5, 4)
    )
    for env, named in (
        ({"WFA_INPUT_CHECK_DEADLINE": "soon"}, "WFA_INPUT_CHECK_DEADLINE"),
        ({"WFA_INPUT_CHECK_DEADLINE": "0"}, "WFA_INPUT_CHECK_DEADLINE"),
        ({"WFA_INPUT_CHECK_DEADLINE": "nan"}, "WFA_INPUT_CHECK_DEADLINE"),
        ({"WFA_INPUT_CHECK_DEADLINE": "600"}, "WFA_INPUT_CHECK_DEADLINE"),
        ({"WFA_INPUT_CHECK_SLOTS": "0"}, "WFA_INPUT_CHECK_SLOTS"),
        ({"WFA_INPUT_CHECK_SLOTS": "2.5"}, "WFA_INPUT_CHECK_SLOTS"),
    ):
        with pytest.raises(ValueError, match=named):
            input_check_settings(env)
