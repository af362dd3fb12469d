"""Checking a run's input against a definition's ``input_schema``, outside the caller's event loop.

A definition is untrusted, and so is its ``input_schema``: ``uniqueItems`` compares every pair of
items (4,000 objects take about 20 s of CPU), a ``pattern`` can backtrack (``^(a|a)*$``), and
combinators nested over recursive data multiply, in time and in memory. Checked on the event loop
of a shared process (the gateway, a worker, a service's client), one tenant's schema and one large
webhook or event body would hold every other request. So every check runs in a separate Python
process:

* **bounded in time**: a check that uses more than its deadline of CPU (``WFA_INPUT_CHECK_DEADLINE``,
  default 20 s) is stopped by the kernel (``RLIMIT_CPU``) and the input refused, whatever the load
  of the machine, so an input is never refused because other work slowed its check; one that gets
  no answer within three times the deadline (at least the deadline and 20 s) by the clock is
  stopped as *unavailable* (the machine too busy; try again), and the process stops itself then
  (``SIGALRM``) if its caller is gone;
* **bounded in memory**: :data:`MEMORY_BYTES` of address space (a check that needs more is refused
  with ``MemoryError`` as its problem);
* **bounded in number**: at most ``WFA_INPUT_CHECK_SLOTS`` checks (default 2) run at once per event
  loop (one per process in the worker and the gateway); with two or more, one owner (a tenant)
  holds at most all but one of them, and a freed slot goes to the waiting owner served least
  recently, so tenants that keep slots busy with slow checks take turns with the others;
* **cheap when the schema is**: a checking process serves check after check (it imports only
  ``interpreter.input_schema``: about 0.6 s of CPU to start, not counted in the deadline); it is
  replaced when it is killed, leaves when it has been idle for :data:`IDLE_S`, and when its
  caller's process ends (its socket closes).

The same processes check an ``llm`` step's answer against its ``json_schema`` (:func:`check_value`:
any JSON value, the schema's own draft, an unusable schema told apart as
:class:`SchemaUnusableError`).

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
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import interpreter
from interpreter.input_schema import SchemaUnusableError

if TYPE_CHECKING:
    from interpreter.model import Definition
    from interpreter.validate import Problem

__all__ = [
    "CHECK_DEADLINE_ENV",
    "CHECK_SLOTS_ENV",
    "DEFAULT_CHECK_DEADLINE_S",
    "DEFAULT_CHECK_SLOTS",
    "IDLE_S",
    "MEMORY_BYTES",
    "START_S",
    "InputCheckBusyError",
    "InputCheckFailedError",
    "InputCheckSettings",
    "SchemaUnusableError",
    "check_input",
    "check_value",
    "close_idle",
    "input_check_settings",
    "schedule_input_problems",
]

CHECK_DEADLINE_ENV = "WFA_INPUT_CHECK_DEADLINE"
CHECK_SLOTS_ENV = "WFA_INPUT_CHECK_SLOTS"
DEFAULT_CHECK_DEADLINE_S = 20.0
"""The CPU time one check may use, unless configured."""
DEFAULT_CHECK_SLOTS = 2
"""Checks one event loop runs at once (each in its own process), unless configured."""
START_S = 10.0
"""The longest a new checking process may take to be ready (its imports), apart from the deadline:
on a loaded machine a start can take seconds, and an input is never refused for that."""
IDLE_S = 300
"""A checking process with nothing to check for this long leaves (the next check starts another);
one idle for nearly as long is not given a check (it could leave while it reads it)."""
MEMORY_BYTES = 512 * 1024 * 1024
"""The address space of a checking process (about 55 MB when it starts)."""
_DEADLINE_RANGE = (1.0, 20.0)
"""At most 20 s of CPU: a subflow step gives its check two minutes (its local activity's timeout),
which hold a wait for a slot (at most the deadline and :data:`START_S`), a process's start (at most
:data:`START_S`) and the check (at most three times the deadline by the clock)."""
_SLOTS_RANGE = (1, 64)
_PATH_CHARS = 1000
"""A problem's path is cut to this many characters (its message to the caller's ``most``)."""
_ANSWER_BYTES = 1 << 20
"""The longest answer line read from a checking process."""


class InputCheckBusyError(RuntimeError):
    """No checking slot came free within the deadline and :data:`START_S` (every slot busy, or this
    owner's share). A check holds its slot for about its deadline and a process's start on a
    machine with CPU to spare; longer (up to :data:`START_S` and three times the deadline) only when
    the machine is too busy, when the waiters are answered busy too."""


class InputCheckFailedError(RuntimeError):
    """The checking process failed, could not start, or ended without answering."""


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
    low, high = _DEADLINE_RANGE
    deadline = _ranged(source, CHECK_DEADLINE_ENV, parse=float, low=low, high=high, what="number of seconds")
    least, most = _SLOTS_RANGE
    slots = _ranged(source, CHECK_SLOTS_ENV, parse=int, low=least, high=most, what="whole number of checks")
    return InputCheckSettings(
        DEFAULT_CHECK_DEADLINE_S if deadline is None else deadline,
        DEFAULT_CHECK_SLOTS if slots is None else int(slots),
    )


def _ranged(
    source: Mapping[str, str], name: str, *, parse: Callable[[str], float], low: float, high: float, what: str
) -> float | None:
    """The value of variable ``name`` (None when unset), parsed and from ``low`` to ``high``."""
    raw = source.get(name, "").strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise ValueError(f"{name}: {raw[:40]!r} is not a {what} from {low:g} to {high:g}")
    return value


# The checking process. Given its idle limit in seconds and its address-space limit in bytes, it
# writes "ready" once its imports are done, then answers one JSON line per request line on its
# stdin ({"schema", "input", "cpu", "wall", "most", and "value": true to check any JSON value with
# schema_value_problems) with {"problems": [[path, message], ...]}, {"unusable": text} (the schema
# cannot be applied to the value) or {"error": text}. Run with -c (not -m), so it imports only what
# it needs, not the caller's package or its __main__. While it checks, the kernel ends it (SIGXCPU) once the check has used
# "cpu" seconds of CPU; SIGALRM at its default action ends it after "wall" seconds (its caller
# gone), and after the idle limit while it waits.
_CHILD = f"""
import json, math, os, resource, signal, sys
for number in (signal.SIGALRM, signal.SIGXCPU):  # whatever its caller's thread had set or blocked
    signal.signal(number, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGALRM, signal.SIGXCPU}})
signal.signal(signal.SIGINT, signal.SIG_IGN)  # its caller decides when it ends
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
infinity = resource.RLIM_INFINITY
memory_hard = resource.getrlimit(resource.RLIMIT_AS)[1]
memory = int(sys.argv[2]) if memory_hard == infinity else min(int(sys.argv[2]), memory_hard)
resource.setrlimit(resource.RLIMIT_AS, (memory, memory_hard))
hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
from interpreter.input_schema import SchemaUnusableError, schema_input_problems, schema_value_problems
idle = int(sys.argv[1])
source, sink = sys.stdin.buffer, sys.stdout.buffer
sink.write(b"ready\\n")
sink.flush()
def cpu():
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime
while True:
    signal.alarm(idle)
    line = source.readline()
    if not line:
        break
    signal.alarm(0)
    try:
        request = json.loads(line)
        soft = math.ceil(cpu() + request["cpu"])  # the check may use "cpu" seconds more, at most 1 s over
        if hard != infinity and soft >= hard:  # a lower hard limit (SIGKILL): left for a new process
            raise OSError("this process has used too much of its CPU limit to check again")
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        signal.alarm(request["wall"])
        most = request["most"]
        check = schema_value_problems if request.get("value") else schema_input_problems
        found = check(request["schema"], request["input"])
        answer = {{"problems": [[p.path[:{_PATH_CHARS}], p.message[:most]] for p in found]}}
    except SchemaUnusableError as err:
        answer = {{"unusable": str(err)[:300]}}
    except Exception as err:
        answer = {{"error": (type(err).__name__ + ": " + str(err))[:300]}}
    signal.alarm(0)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    sink.write(json.dumps(answer).encode() + b"\\n")
    sink.flush()
    if hard != infinity and hard - cpu() < 3:
        break
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
                # -P: not the caller's working directory first on sys.path (its own interpreter/)
                [sys.executable, "-P", "-c", _CHILD, str(IDLE_S), str(MEMORY_BYTES)],
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
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        """Alive, and not about to leave for having been idle."""
        return self.popen.poll() is None and time.monotonic() - self.idle_since < IDLE_S - 30

    def close(self) -> None:
        """Kills the process (if it still runs); it is reaped now or soon by :func:`_reap`."""
        self.sock.close()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            if self.popen.poll() is None:  # not gone yet: reaped soon, never waited for here
                _DYING.append(self)
                with contextlib.suppress(RuntimeError):  # no running loop: at the next check
                    asyncio.get_running_loop().call_later(0.5, _reap)

    async def line(self) -> bytes:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
            if len(self.buffer) > _ANSWER_BYTES:
                raise InputCheckFailedError("the process checking the input answered too much")
        answer, _, self.buffer = self.buffer.partition(b"\n")
        return answer


_IDLE: list[_Process] = []
"""Checking processes ready and waiting for a check (any event loop may take one)."""
_DYING: list[_Process] = []
"""Killed checking processes not reaped yet."""


def _reap() -> None:
    """Reaps killed processes, and drops idle ones that left or are about to."""
    for process in list(_DYING):
        if process.popen.poll() is not None:
            _DYING.remove(process)
    for process in list(_IDLE):
        if not process.usable():
            _IDLE.remove(process)
            process.close()


class _Slots:
    """Who holds the checking slots of one event loop, and who waits. A freed slot goes to the
    waiting owner served least recently (first come, first served within an owner)."""

    def __init__(self) -> None:
        self.busy = 0
        self.held: dict[str, int] = {}
        self.waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self.served: dict[str, float] = {}

    @staticmethod
    def share(slots: int) -> int:
        """The most slots one owner holds: all but one, when there are two or more."""
        return max(1, slots - 1)

    def _may(self, owner: str, slots: int) -> bool:
        return self.busy < slots and self.held.get(owner, 0) < self.share(slots)

    def _take(self, owner: str) -> None:
        self.busy += 1
        self.held[owner] = self.held.get(owner, 0) + 1
        self.served[owner] = time.monotonic()
        if len(self.served) > 10_000:  # forget the owners served longest ago
            for old in sorted(self.served, key=self.served.__getitem__)[:5_000]:
                if old not in self.held:
                    del self.served[old]

    async def acquire(self, owner: str, slots: int, timeout: float) -> None:
        if self._may(owner, slots):  # whoever waits cannot take a slot now (a release hands them on)
            self._take(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(owner, collections.deque()).append(waiter)
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(owner, slots)  # granted as the wait ended: hand it on
            else:
                waiter.cancel()
                self._forget(owner, waiter)
            raise
        if task is not None and task.cancelling() > cancels:  # granted and cancelled at once
            self.release(owner, slots)
            raise asyncio.CancelledError

    def _forget(self, owner: str, waiter: asyncio.Future[None]) -> None:
        queue = self.waiting.get(owner)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self.waiting[owner]

    def release(self, owner: str, slots: int) -> None:
        self.busy -= 1
        left = self.held.get(owner, 0) - 1
        if left > 0:
            self.held[owner] = left
        else:
            self.held.pop(owner, None)
        while self.busy < slots:
            ready = [o for o in self.waiting if self._may(o, slots)]
            if not ready:
                return
            chosen = min(ready, key=lambda o: self.served.get(o, 0.0))
            queue = self.waiting[chosen]
            waiter = queue.popleft()
            if not queue:
                del self.waiting[chosen]
            if waiter.done():
                continue
            self._take(chosen)
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
        InputCheckFailedError: The checking process failed, or could not start.
        ValueError: ``WFA_INPUT_CHECK_DEADLINE`` or ``WFA_INPUT_CHECK_SLOTS`` is malformed.
    """
    return await _check(schema, input, value=False, owner=owner, most_chars=most_chars, deadline_s=None)


async def check_value(
    schema: Mapping[str, Any],
    value: Any,
    *,
    owner: str = "",
    most_chars: int = 300,
    deadline_s: float | None = None,
) -> list[tuple[str, str]]:
    """The problems of any JSON ``value`` (an ``llm`` step's answer) against ``schema`` (of the
    draft its ``$schema`` names; ``format`` not asserted), as :func:`check_input` finds them, in
    the same processes, slots and deadline.

    Args:
        schema: The schema (an ``llm`` step's ``json_schema``).
        value: The value, as decoded from JSON.
        owner: Who asks (the tenant): one owner holds at most all but one slot.
        most_chars: The longest message returned.
        deadline_s: A shorter CPU deadline than the configured one (at least 1 s).

    Raises:
        TimeoutError: The check took longer than the deadline (the process was killed).
        SchemaUnusableError: The schema cannot be applied to the value.
        InputCheckBusyError: No slot came free within the deadline.
        InputCheckFailedError: The checking process failed, or could not start.
        ValueError: ``WFA_INPUT_CHECK_DEADLINE`` or ``WFA_INPUT_CHECK_SLOTS`` is malformed.
    """
    return await _check(schema, value, value=True, owner=owner, most_chars=most_chars, deadline_s=deadline_s)


async def _check(
    schema: Mapping[str, Any],
    input: Any,
    *,
    value: bool,
    owner: str,
    most_chars: int,
    deadline_s: float | None,
) -> list[tuple[str, str]]:
    settings = input_check_settings()
    deadline = settings.deadline_s
    if deadline_s is not None:
        deadline = max(_DEADLINE_RANGE[0], min(deadline, deadline_s))
    _reap()
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = _Slots()
    try:
        await slots.acquire(owner, settings.slots, deadline + START_S)
    except TimeoutError:
        raise InputCheckBusyError(
            f"every input check of this process stayed busy for {deadline + START_S:g} s ({settings.slots} at"
            f" once, at most {_Slots.share(settings.slots)} for one tenant)"
        ) from None
    try:
        line = (
            json.dumps(
                {
                    "schema": schema,
                    "input": input,
                    "cpu": math.ceil(deadline),
                    "wall": math.ceil(_wall(deadline)) + 1,
                    "most": most_chars,
                    **({"value": True} if value else {}),
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )
        answer = await _ask(line, deadline, settings.slots)
    finally:
        slots.release(owner, settings.slots)
    if "unusable" in answer:  # the same class as the checking process raised
        raise SchemaUnusableError(str(answer["unusable"]))
    if "error" in answer:
        raise InputCheckFailedError(f"the process checking the input failed: {answer['error']}")
    return [(str(path), str(message)) for path, message in answer["problems"]]


async def _ask(line: bytes, deadline: float, slots: int) -> dict[str, Any]:
    """One answer from an idle checking process, or from a new one if none is idle or the idle one
    turns out to have left before it had the request."""
    while _IDLE:
        process = _IDLE.pop()
        if not process.usable():
            process.close()
            continue
        try:
            return await _exchange(process, line, deadline, slots)
        except _NotSentError:  # it left while idle: a new one answers
            continue
    process = _Process()
    try:
        async with asyncio.timeout(START_S):
            ready = await process.line()
    except BaseException as err:
        process.close()
        if isinstance(err, TimeoutError):
            raise InputCheckFailedError(
                f"a process to check the input did not start within {START_S:g} s"
            ) from None
        if isinstance(err, EOFError | OSError):
            raise InputCheckFailedError(
                f"the process to check the input ended as it started ({_ending(process.popen.poll(), err)})"
            ) from None
        raise
    if ready != b"ready":
        process.close()
        raise InputCheckFailedError(f"the process to check the input started wrong: {ready[:80]!r}")
    try:
        return await _exchange(process, line, deadline, slots)
    except _NotSentError as err:
        raise InputCheckFailedError(
            f"the process checking the input ended before it had the input ({_ending(process.popen.poll(), err)})"
        ) from None


class _NotSentError(Exception):
    """The request could not be sent: the process had left."""


async def _exchange(process: _Process, line: bytes, deadline: float, slots: int) -> dict[str, Any]:
    """``process``'s answer within ``deadline`` (the process killed past it); the process goes back
    to the idle ones only after a whole answer."""
    loop = asyncio.get_running_loop()
    wall = _wall(deadline)
    try:
        async with asyncio.timeout(wall):
            try:
                await loop.sock_sendall(process.sock, line)
            except (BrokenPipeError, ConnectionResetError) as err:
                raise _NotSentError(type(err).__name__) from None
            answer = await process.line()
    except TimeoutError:
        process.close()
        raise InputCheckFailedError(
            f"no answer within {wall:g} s while the check had used less than {deadline:g} s of CPU: this"
            " machine is too busy to check the input now"
        ) from None
    except (EOFError, OSError) as err:
        try:
            status = await _status(process)
        finally:
            process.close()
        if status == -signal.SIGXCPU:
            raise TimeoutError(f"the check used more than {deadline:g} s of CPU") from None
        raise InputCheckFailedError(
            f"the process checking the input ended without answering ({_ending(status, err)})"
        ) from None
    except BaseException:  # cancelled, or it failed: this process is done
        process.close()
        raise
    try:
        parsed: dict[str, Any] = json.loads(answer)
    except ValueError:
        process.close()
        raise InputCheckFailedError(
            f"the process checking the input answered wrong: {answer[:80]!r}"
        ) from None
    process.idle_since = time.monotonic()
    if len(_IDLE) < slots:
        _IDLE.append(process)
    else:
        process.close()
    return parsed


def _wall(deadline: float) -> float:
    """How long a check may take by the clock: its CPU deadline, with room for a loaded machine
    (past it the check is not refused, but answered as unavailable)."""
    return max(3 * deadline, deadline + 20)


async def _status(process: _Process) -> int | None:
    """The exit status of a process whose socket closed (it is gone, or about to be)."""
    for _ in range(100):
        status = process.popen.poll()
        if status is not None:
            return status
        await asyncio.sleep(0.01)
    return None


def _ending(status: int | None, err: BaseException) -> str:
    if status is None:
        return type(err).__name__
    if status < 0:
        return f"stopped by signal {-status}"
    return f"exit status {status}"


def close_idle() -> None:
    """Ends every idle checking process (they would leave on their own, at the latest when this
    process ends)."""
    while _IDLE:
        _IDLE.pop().close()
    _reap()


async def schedule_input_problems(definition: Definition, *, owner: str = "") -> list[Problem]:
    """The problems of each ``schedule`` trigger's fixed ``input`` against the definition's
    ``input_schema`` (``$.triggers[i].input...``), checked as every run input is (:func:`check_input`):
    what registration and ``wfa validate`` add to the pure validator's problems. A check past the
    deadline is a problem too (at the trigger's input).

    Raises:
        InputCheckBusyError: No slot came free within the deadline.
        InputCheckFailedError: The checking process failed.
    """
    from interpreter.input_schema import schema_problems
    from interpreter.model import ScheduleTrigger
    from interpreter.validate import Problem

    schema = definition.input_schema
    if schema is None or schema_problems(schema):
        return []  # no schema, or one the validator already refuses
    problems: list[Problem] = []
    for index, trigger in enumerate(definition.triggers):
        if not isinstance(trigger, ScheduleTrigger):
            continue
        path = f"$.triggers[{index}].input"
        try:
            found = await check_input(schema, trigger.input, owner=owner, most_chars=1000)
        except TimeoutError:
            found = [
                ("$", f"checking it took more than {input_check_settings().deadline_s:g} s of CPU: stopped")
            ]
        problems.extend(
            Problem(f"{path}{where[1:]}", f"does not match input_schema: {message}")
            for where, message in found
        )
    return problems
