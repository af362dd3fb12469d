"""Checking a run's input against a definition's ``input_schema``, outside the caller's event loop.

A definition is untrusted, and so is its ``input_schema``: ``uniqueItems`` compares every pair of
items (4,000 objects take about 20 s of CPU), and combinators nested over recursive data multiply.
Checked on the event loop of a shared process (the gateway, a worker, a service's client), one
tenant's schema and one large webhook or event body would hold every other request. So every check
runs in a separate Python process:

* **bounded in time**: the process is killed past its deadline (``WFA_INPUT_CHECK_DEADLINE``,
  default 20 s, its start included), and the kernel stops it at the deadline even if the caller is
  gone (``SIGALRM`` at its default action);
* **bounded in number**: at most ``WFA_INPUT_CHECK_SLOTS`` checks (default 2) run at once per event
  loop, and one owner (a tenant) holds at most all but one of them, so one tenant's slow checks
  leave a slot to the others;
* **cheap when the schema is**: a checking process serves check after check (it imports only
  ``interpreter.input_schema``, about 0.6 s of CPU to start); it is replaced when it is killed,
  leaves when it has been idle for :data:`IDLE_S`, and when its caller's process ends (its
  socket closes).

The process talks over a socket pair (one JSON line each way), so an idle process belongs to no
event loop and no asyncio transport outlives the loop that started it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import interpreter

__all__ = [
    "CHECK_DEADLINE_ENV",
    "CHECK_SLOTS_ENV",
    "DEFAULT_CHECK_DEADLINE_S",
    "DEFAULT_CHECK_SLOTS",
    "IDLE_S",
    "InputCheckBusyError",
    "InputCheckFailedError",
    "InputCheckSettings",
    "check_input",
    "input_check_settings",
]

CHECK_DEADLINE_ENV = "WFA_INPUT_CHECK_DEADLINE"
CHECK_SLOTS_ENV = "WFA_INPUT_CHECK_SLOTS"
DEFAULT_CHECK_DEADLINE_S = 20.0
"""The longest one check may take, its process's start included, unless configured."""
DEFAULT_CHECK_SLOTS = 2
"""Checks one event loop runs at once (each in its own process), unless configured."""
IDLE_S = 300
"""A checking process with nothing to check for this long leaves (the next check starts another)."""
_DEADLINE_RANGE = (1.0, 50.0)
"""At most 50 s: a subflow step gives its check a minute (its local activity's timeout)."""
_SLOTS_RANGE = (1, 64)
_PATH_CHARS = 1000
"""A problem's path is cut to this many characters (its message to the caller's ``most``)."""
_ANSWER_BYTES = 1 << 20
"""The longest answer line read from a checking process."""


class InputCheckBusyError(RuntimeError):
    """No checking slot came free within the deadline (every slot busy, or this owner's share)."""


class InputCheckFailedError(RuntimeError):
    """The checking process failed or ended without answering."""


@dataclass(frozen=True)
class InputCheckSettings:
    """``WFA_INPUT_CHECK_DEADLINE`` (seconds) and ``WFA_INPUT_CHECK_SLOTS``."""

    deadline_s: float = DEFAULT_CHECK_DEADLINE_S
    slots: int = DEFAULT_CHECK_SLOTS


def input_check_settings(env: Mapping[str, str] | None = None) -> InputCheckSettings:
    """The settings in ``env`` (default ``os.environ``); unset ones are the defaults.

    Raises:
        ValueError: A value that is not a number in range (the message names the variable).
    """
    source = os.environ if env is None else env
    deadline, slots = DEFAULT_CHECK_DEADLINE_S, DEFAULT_CHECK_SLOTS
    raw = source.get(CHECK_DEADLINE_ENV, "").strip()
    if raw:
        low, high = _DEADLINE_RANGE
        try:
            deadline = float(raw)
        except ValueError:
            deadline = math.nan
        if not low <= deadline <= high:
            raise ValueError(
                f"{CHECK_DEADLINE_ENV}: {raw[:40]!r} is not a number of seconds from {low:g} to {high:g}"
            )
    raw = source.get(CHECK_SLOTS_ENV, "").strip()
    if raw:
        least, most = _SLOTS_RANGE
        try:
            slots = int(raw)
        except ValueError:
            slots = -1
        if not least <= slots <= most:
            raise ValueError(
                f"{CHECK_SLOTS_ENV}: {raw[:40]!r} is not a whole number of checks from {least} to {most}"
            )
    return InputCheckSettings(deadline, slots)


def _settings() -> InputCheckSettings:
    """The settings now; a value broken since the process checked it at start counts as unset."""
    try:
        return input_check_settings()
    except ValueError:
        return InputCheckSettings()


# The checking process. Given its idle limit in seconds, it answers one JSON line per request line
# on its stdin ({"schema", "input", "limit", "most"}) with {"problems": [[path, message], ...]} or
# {"error": text}. Run with -c (not -m), so it imports only what it needs, not the caller's
# package or its __main__. SIGALRM at its default action ends it: at the request's limit while
# checking, after the idle limit while waiting.
_CHILD = f"""
import json, signal, sys
signal.signal(signal.SIGALRM, signal.SIG_DFL)
from interpreter.input_schema import schema_input_problems
idle = int(sys.argv[1])
source, sink = sys.stdin.buffer, sys.stdout.buffer
while True:
    signal.alarm(idle)
    line = source.readline()
    if not line:
        break
    request = json.loads(line)
    signal.alarm(request["limit"])
    try:
        most = request["most"]
        found = schema_input_problems(request["schema"], request["input"])
        answer = {{"problems": [[p.path[:{_PATH_CHARS}], p.message[:most]] for p in found]}}
    except Exception as err:
        answer = {{"error": (type(err).__name__ + ": " + str(err))[:300]}}
    signal.alarm(0)
    sink.write(json.dumps(answer).encode() + b"\\n")
    sink.flush()
"""
_ROOT = str(Path(interpreter.__file__ or ".").resolve().parent.parent)
"""Where the checking process imports ``interpreter`` from (this very copy)."""


class _Process:
    """One checking process and the parent's end of its socket."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p),
        }
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(IDLE_S)],
                stdin=child.fileno(),
                stdout=child.fileno(),
                stderr=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self.buffer = b""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def close(self) -> None:
        """Kills the process (if it still runs) and reaps it."""
        self.sock.close()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)  # a killed process is gone at once

    async def ask(self, line: bytes) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, line)
        while b"\n" not in self.buffer:
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
            if len(self.buffer) > _ANSWER_BYTES:
                raise InputCheckFailedError("the process checking the input answered too much")
        answer, _, self.buffer = self.buffer.partition(b"\n")
        parsed: dict[str, Any] = json.loads(answer)
        return parsed


_IDLE: list[_Process] = []
"""Checking processes waiting for a check (any event loop may take one)."""


class _Slots:
    """Who holds the checking slots of one event loop, and who waits: a freed slot goes to the
    first waiter whose owner may take one."""

    def __init__(self) -> None:
        self.busy = 0
        self.held: dict[str, int] = {}
        self.waiting: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()

    def _may(self, owner: str, slots: int) -> bool:
        share = max(1, slots - 1)
        return self.busy < slots and self.held.get(owner, 0) < share

    def _take(self, owner: str) -> None:
        self.busy += 1
        self.held[owner] = self.held.get(owner, 0) + 1

    async def acquire(self, owner: str, slots: int, timeout: float) -> None:
        if self._may(owner, slots):  # whoever waits cannot take a slot now (a release hands them on)
            self._take(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (owner, waiter)
        self.waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(owner, slots)  # granted as the wait ended: hand it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self.waiting.remove(entry)
            raise

    def release(self, owner: str, slots: int) -> None:
        self.busy -= 1
        left = self.held.get(owner, 0) - 1
        if left > 0:
            self.held[owner] = left
        else:
            self.held.pop(owner, None)
        for entry in list(self.waiting):
            waiting_owner, waiter = entry
            if waiter.done():
                self.waiting.remove(entry)
            elif self._may(waiting_owner, slots):
                self.waiting.remove(entry)
                self._take(waiting_owner)
                waiter.set_result(None)


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


async def check_input(
    schema: Mapping[str, Any],
    input: Mapping[str, Any],
    *,
    owner: str = "",
    most_chars: int = 300,
) -> list[tuple[str, str]]:
    """The problems of ``input`` against ``schema``: ``(JSON path, message)`` pairs sorted by path,
    at most :data:`interpreter.input_schema.MAX_INPUT_PROBLEMS`, each message cut to
    ``most_chars``. Checked in a separate process within the configured deadline.

    Args:
        schema: The definition's ``input_schema``.
        input: The run input (a JSON object).
        owner: Who asks (the tenant): one owner holds at most all but one slot.
        most_chars: The longest message returned.

    Raises:
        TimeoutError: The check took longer than the deadline (the process was killed).
        InputCheckBusyError: No slot came free within the deadline.
        InputCheckFailedError: The checking process failed.
    """
    settings = _settings()
    deadline = settings.deadline_s
    line = (
        json.dumps(
            {"schema": schema, "input": input, "limit": math.ceil(deadline) + 1, "most": most_chars},
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = _Slots()
    try:
        await slots.acquire(owner, settings.slots, deadline)
    except TimeoutError:
        raise InputCheckBusyError(
            f"every input check of this process stayed busy for {deadline:g} s"
            f" ({settings.slots} at once, at most {max(1, settings.slots - 1)} for one tenant)"
        ) from None
    try:
        answer = await asyncio.wait_for(_ask(line), deadline)
    finally:
        slots.release(owner, settings.slots)
    if "error" in answer:
        raise InputCheckFailedError(f"the process checking the input failed: {answer['error']}")
    return [(str(path), str(message)) for path, message in answer["problems"]]


async def _ask(line: bytes) -> dict[str, Any]:
    """One answer from an idle checking process, or from a new one if none is idle or the idle one
    turns out to have left."""
    while _IDLE:
        process = _IDLE.pop()
        if not process.alive():
            process.close()
            continue
        try:
            return await _exchange(process, line)
        except (EOFError, OSError):  # it left while idle (or just then): a new one answers
            continue
    process = _Process()
    try:
        return await _exchange(process, line)
    except (EOFError, OSError) as err:
        status = process.popen.poll()
        raise InputCheckFailedError(
            f"the process checking the input ended without answering ({_ending(status, err)})"
        ) from None


async def _exchange(process: _Process, line: bytes) -> dict[str, Any]:
    """``process``'s answer; the process goes back to the idle ones only after a whole answer."""
    try:
        answer = await process.ask(line)
    except BaseException:  # past the deadline, cancelled, or it failed: this process is done
        process.close()
        raise
    settings = _settings()
    if len(_IDLE) < settings.slots:
        _IDLE.append(process)
    else:
        process.close()
    return answer


def _ending(status: int | None, err: BaseException) -> str:
    if status is None:
        return f"{type(err).__name__}"
    if status < 0:
        return f"stopped by signal {-status}"
    return f"exit status {status}"


def close_idle() -> None:
    """Ends every idle checking process (at shutdown; they would leave on their own)."""
    while _IDLE:
        _IDLE.pop().close()
