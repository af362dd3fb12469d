"""Checking run input against an ``input_schema`` in processes of their own (activities.input_check).

The attacker is a tenant's schema that makes checking slow (``uniqueItems`` over thousands of
objects: every pair compared) and the caller's process that it would hold (the gateway, a worker,
a service's client). Every test uses real checking processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    _Slots,
    check_input,
    close_idle,
    input_check_settings,
    schedule_input_problems,
)
from interpreter.input_schema import schema_input_problems
from interpreter.validate import load_definition

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
    assert _wait_gone(warm, 5), "the process of the stopped check still runs"
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
    """Two slots: tenant A's slow checks take one slot, one after the other (those that wait past
    the deadline and a process's start are refused as busy), and tenant B's check is answered
    while A's first still runs."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "1")
    checks = [asyncio.create_task(check_input(UNIQUE, SLOW, owner="A")) for _ in range(14)]
    await asyncio.sleep(0.2)
    assert await check_input(UNIQUE, {"rows": [3, 3]}, owner="B") == [
        ("$.rows", "[3, 3] has non-unique elements")
    ]
    assert not checks[-1].done(), "B waited for A's checks"
    ends = await asyncio.gather(*checks, return_exceptions=True)
    kinds = [type(end).__name__ for end in ends]
    assert set(kinds) == {"TimeoutError", "InputCheckBusyError"}, kinds
    assert kinds[0] == "TimeoutError"
    busy = next(end for end in ends if isinstance(end, InputCheckBusyError))
    assert "busy for 11 s (2 at once, at most 1 for one tenant)" in str(busy)


async def test_a_schema_that_needs_much_memory_is_refused_at_the_processs_limit() -> None:
    """The attacker: a 1.3 KB schema whose ``$ref`` chain multiplies every error by 10 five times
    (10^5 errors, each quoting a 100 KB value): without a limit the checking process grew past
    3 GB within the deadline. It is held to MEMORY_BYTES, and the input is refused naming it."""
    defs: dict[str, Any] = {"d0": {"type": "integer"}}
    for level in range(1, 6):
        defs[f"d{level}"] = {"allOf": [{"$ref": f"#/$defs/d{level - 1}"}] * 10}
    schema = {"$defs": defs, "type": "object", "properties": {"x": {"$ref": "#/$defs/d5"}}}
    found = await check_input(schema, {"x": "A" * 100_000})
    assert found, "refused"
    assert all(len(message) <= 300 for _, message in found)
    peak = max(_peak_kib(process.popen.pid) for process in input_check._IDLE)
    assert peak <= input_check.MEMORY_BYTES // 1024, f"a checking process reached {peak} KiB"


async def test_anyof_over_recursion_is_held_to_the_memory_limit() -> None:
    """``anyOf`` keeps every branch's errors: nested ten wide, five deep, over a 100 KB value (the
    reviewer's process grew 70 MB/s without a limit). At MEMORY_BYTES it ends in ``MemoryError``,
    a problem at ``$`` that refuses the input, and the same process answers the next check."""
    defs: dict[str, Any] = {"d0": {"type": "integer"}}
    for level in range(1, 6):
        defs[f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level - 1}"}, {"minLength": 10**9}] * 5}
    schema = {"$defs": defs, "type": "object", "properties": {"x": {"$ref": "#/$defs/d5"}}}
    found = await check_input(schema, {"x": "A" * 100_000})
    assert found == [("$", "the definition's input_schema cannot be applied: MemoryError: ")]
    assert await check_input(UNIQUE, {"rows": [4, 4]}) == [("$.rows", "[4, 4] has non-unique elements")]


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmPeak for {pid}")


async def test_two_tenants_keeping_the_slots_busy_take_turns_with_a_third(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker: tenants A and B each keep slow checks queued, so both slots are always held
    by one of them. A freed slot goes to the waiting tenant served least recently: tenant C's
    checks wait for the next freed slot, not behind A's and B's queue, and are answered."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "2")
    stop = asyncio.Event()

    async def flood(owner: str) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, InputCheckBusyError):
                await check_input(UNIQUE, SLOW, owner=owner)

    floods = [asyncio.create_task(flood(owner)) for owner in ("A", "A", "B", "B")]
    try:
        await asyncio.sleep(1.0)
        for attempt in range(3):
            assert await check_input(UNIQUE, {"rows": [attempt, attempt]}, owner="C") == [
                ("$.rows", f"[{attempt}, {attempt}] has non-unique elements")
            ]
    finally:
        stop.set()
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)


async def test_slots_are_never_lost_or_overdrawn_under_timeouts_and_cancellations() -> None:
    """The slot accounting alone, 400 holders with random hold times, wait limits and
    cancellations: never more than the slots, never more than an owner's share, and all free at
    the end."""
    import random

    slots, most = _Slots(), 3
    rng = random.Random(7)
    seen = {"over": 0}

    async def holder(owner: str) -> None:
        try:
            await slots.acquire(owner, most, rng.choice([0.001, 0.01, 0.05]))
        except TimeoutError:
            return
        try:
            if slots.busy > most or slots.held.get(owner, 0) > _Slots.share(most):
                seen["over"] += 1
            await asyncio.sleep(rng.choice([0, 0.001, 0.005]))
        finally:
            slots.release(owner, most)

    tasks = [asyncio.create_task(holder(rng.choice("ABCD"))) for _ in range(400)]
    for task in rng.sample(tasks, 100):
        await asyncio.sleep(rng.choice([0, 0.001]))
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert seen["over"] == 0
    assert (slots.busy, slots.held, slots.waiting) == (0, {}, {})


async def test_a_schedules_fixed_input_is_checked_in_a_process_and_loading_never_checks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker: a backtracking ``pattern`` (``^(a|a)*$`` passes the nested-quantifier lint)
    and a schedule trigger's fixed input of 40 ``a`` and a ``!``: about 2^40 steps. Checked in the
    pure validator, every process loading the stored definition (the gateway before a webhook's
    signature is verified, a worker resolving a subflow) stalled on it. Loading now leaves the
    fixed input alone; registration and ``wfa validate`` check it in a process, stopped at the
    deadline."""
    monkeypatch.setenv("WFA_INPUT_CHECK_DEADLINE", "2")
    document = {
        "name": "slow-schedule",
        "input_schema": {
            "type": "object",
            "properties": {
                "s": {"anyOf": [{"pattern": "^(a|a)*$"}, {"type": "string"}]},
                "t": {"type": "string"},
            },
        },
        "triggers": [
            {"type": "schedule", "id": "nightly", "cron": "0 3 * * *", "input": {"s": "a" * 40 + "!"}}
        ],
        "steps": [{"id": "noop", "type": "set", "vars": {"x": "1"}}],
    }
    definition = load_definition(document)
    assert [(p.path, p.message) for p in await schedule_input_problems(definition)] == [
        ("$.triggers[0].input", "does not match input_schema: checking it took more than 2 s of CPU: stopped")
    ]
    document["triggers"][0]["input"] = {"s": "a!", "t": 5}  # type: ignore[index]
    assert [(p.path, p.message) for p in await schedule_input_problems(load_definition(document))] == [
        ("$.triggers[0].input.t", "does not match input_schema: 5 is not of type 'string'")
    ]


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


def _call(program: str, *args: str, cwd: Path | None = None) -> str:
    """What ``program`` (a caller of this copy, with a 2-second deadline) prints; it must succeed.
    Run with -P: the caller itself imports this copy whatever its working directory holds."""
    env = {"PYTHONPATH": str(ROOT), "WFA_INPUT_CHECK_DEADLINE": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-P", "-c", program, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("rows", "within"), [(0, 10.0), (6000, 20.0)], ids=["idle", "checking"])
def test_a_checking_process_leaves_when_its_caller_is_gone(rows: int, within: float) -> None:
    """A caller that leaves abruptly (``os._exit``, as a SIGKILLed worker) leaves no checking
    process behind: an idle one sees its socket close, a busy one is stopped by the kernel at the
    check's deadline (2 s here)."""
    out = _call(_CALLER, str(rows))
    pids = [int(pid) for pid in out.split()]
    assert len(pids) == 1, out
    assert _wait_gone(pids[0], within), f"the checking process {pids[0]} outlived its caller"


_HOSTILE_CALLER = """
import asyncio, json, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXCPU, signal.SIGALRM})
from activities import input_check
async def main():
    required = await input_check.check_input({"type": "object", "required": ["x"]}, {})
    slow = {"type": "object", "properties": {"rows": {"type": "array", "uniqueItems": True}}}
    try:
        await input_check.check_input(slow, {"rows": [{"i": i, "tag": f"row-{i}"} for i in range(6000)]})
        ended = "answered"
    except TimeoutError as err:
        ended = str(err)
    print(json.dumps({"required": required, "slow": ended}))
asyncio.run(main())
"""


def test_the_callers_signal_mask_and_working_directory_do_not_change_the_check(tmp_path: Path) -> None:
    """A caller whose thread blocks SIGXCPU and SIGALRM (the child inherits the mask: the CPU
    deadline would never fire), running in a directory that holds an ``interpreter`` package of
    its own that accepts everything (``python -c`` puts the working directory first on the path):
    the check is still this copy's, and still stopped at its deadline."""
    fake = tmp_path / "interpreter"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "input_schema.py").write_text("def schema_input_problems(schema, input):\n    return []\n")
    found = json.loads(_call(_HOSTILE_CALLER, cwd=tmp_path))
    assert found == {
        "required": [["$", "'x' is a required property"]],
        "slow": "the check used more than 2 s of CPU",
    }


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
