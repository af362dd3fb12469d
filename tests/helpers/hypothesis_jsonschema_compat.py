"""Makes hypothesis-jsonschema 0.23.1 (the latest release) work with current Hypothesis.

hypothesis-jsonschema generates objects with Hypothesis's private ``many`` helper through its old
interface (``while elements.more(): ... elements.reject()``); Hypothesis 6.150+ replaced it with a
context manager iterated as ``with many(...) as elements: for _ in elements:``, so every object
schema with optional properties fails with ``'many' object has no attribute 'more'``. This adapter
offers the old interface on top of the new one, for hypothesis-jsonschema's module only (Hypothesis
itself keeps its own ``many``). Import :func:`from_schema` from here.
"""

from __future__ import annotations

import types
from typing import Any

import hypothesis.internal.conjecture.utils as conjecture_utils
from hypothesis_jsonschema import _from_schema, from_schema

__all__ = ["from_schema"]


class _LegacyMany:
    """``many`` with ``more()``/``reject()``, as hypothesis-jsonschema calls it."""

    def __init__(self, data: Any, min_size: int, max_size: float, average_size: float) -> None:
        self._many = conjecture_utils.many(data, min_size, max_size, average_size)
        self._many.__enter__()
        self._elements = iter(self._many)
        self._open = True

    def more(self) -> bool:
        if not self._open:
            return False
        if next(self._elements, StopIteration) is StopIteration:
            self._open = False
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


if not hasattr(conjecture_utils.many, "more"):
    _compat = types.ModuleType(conjecture_utils.__name__)
    _compat.__dict__.update(conjecture_utils.__dict__)
    _compat.many = _LegacyMany  # type: ignore[attr-defined]
    _from_schema.cu = _compat  # type: ignore[attr-defined]
