"""Checks of caller-supplied values before they reach the Temporal server or the database.

Light (no SDK, no driver), so the CLI refuses bad input (exit 2) before connecting to anything.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interpreter.sizes import INT_MAX_BITS, VALUE_MAX_DEPTH, text_problem
from starter.errors import InvalidInputError

__all__ = ["brief", "check_json", "check_json_object", "check_text", "json_type", "text_problem"]


def check_json(
    value: Any, what: str, *, max_depth: int = VALUE_MAX_DEPTH, _path: str = "$", _depth: int = 0
) -> None:
    """Checks that ``value`` is plain JSON the server and the store can both keep.

    Refuses what PostgreSQL cannot store (a NUL character in a string or key), what no UTF-8 encodes
    (a lone surrogate: the data converter would fail on it), what JSON cannot
    express (NaN, infinities, non-string keys, other types) and nesting deeper than ``max_depth``
    levels (default :data:`interpreter.sizes.VALUE_MAX_DEPTH`, 64: what a run keeps of a value; a
    definition document takes :data:`interpreter.validate.DEFINITION_MAX_DEPTH`).

    Raises:
        InvalidInputError: Naming ``what`` and the JSON path of the first problem.
    """
    if _depth > max_depth:
        raise InvalidInputError(f"{what} is nested more than {max_depth} levels deep (at {_path[:200]})")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if value.bit_length() > INT_MAX_BITS:  # a run started with one failed at once (a probe)
            raise InvalidInputError(
                f"{what} has a number of {value.bit_length():,} bits at {_path} (at most {INT_MAX_BITS:,}:"
                " JSON readers refuse it)"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} has a number JSON cannot hold at {_path}: {value}")
        return
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise InvalidInputError(f"{what} has {problem} at {_path}, which cannot be stored")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{what} has a key that is not a string at {_path}: {brief(key)}")
            problem = text_problem(key)
            if problem is not None:
                raise InvalidInputError(f"{what} has {problem} in a key at {_path}")
            check_json(item, what, max_depth=max_depth, _path=f"{_path}.{key[:50]}", _depth=_depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, what, max_depth=max_depth, _path=f"{_path}[{index}]", _depth=_depth + 1)
        return
    raise InvalidInputError(f"{what} has a {type(value).__name__} at {_path}, which is not JSON")


def check_text(text: object, what: str) -> str:
    """``text``, if it is a string :func:`text_problem` finds nothing in.

    Raises:
        InvalidInputError: Not a string, or holding a NUL or a lone surrogate (naming ``what``).
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, not {json_type(text)}")
    problem = text_problem(text)
    if problem is not None:
        raise InvalidInputError(f"{what} has {problem}")
    return text


def check_json_object(value: object, what: str) -> dict[str, Any]:
    """``value`` (None: empty) as a dict, if it is a JSON object :func:`check_json` accepts.

    Raises:
        InvalidInputError: Not a mapping, or not storable JSON.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, not {json_type(value)}")
    check_json(value, what)
    return dict(value)


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def brief(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


READ_MAX_BYTES = 64 * 1024 * 1024
"""The most a file named on the command line is read of (a definition, an ``@file`` value): the
largest payload the payload store takes. ``/dev/zero`` named by mistake is refused at it."""


def read_text_file(path: Path, max_bytes: int = READ_MAX_BYTES) -> str:
    """The UTF-8 text of ``path``, read whatever kind of file it is without hanging or filling
    memory: at most ``max_bytes`` (``/dev/zero`` is refused, as an endless file), and a FIFO that
    no process writes reads as empty instead of waiting for one (found by a probe: ``wfa validate
    /dev/zero`` grew to 3.5 GB, and a FIFO held ``wfa`` past Ctrl-C). A pipe with a writer, such as
    the shell's ``<(...)``, is read as it comes.

    Raises:
        FileNotFoundError: No such file.
        OSError: It cannot be read (``strerror`` says why; ``EFBIG`` past ``max_bytes``).
        UnicodeDecodeError: It is not UTF-8.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes:,} bytes (or an endless file)", str(path))
    return data.decode("utf-8")
