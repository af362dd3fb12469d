"""The generic workflow objects a test worker created, by workflow id (a module passed through the
sandbox, so every workflow instance of the worker sees the same dict). Test tooling only."""

from __future__ import annotations

from typing import Any

OBJECTS: dict[str, Any] = {}
