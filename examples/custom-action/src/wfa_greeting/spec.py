"""The ``greeting`` action's contract: its input and output models and the plugin object.

Imported by validation (``wfa validate``, the client) and by workers; imports no implementation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from interpreter.actions import ActionInput, ActionPlugin


class GreetingInput(ActionInput):
    """Whom to greet, and how."""

    name: str = Field(min_length=1, max_length=100)
    language: Literal["en", "fr", "de"] = "en"
    times: int = Field(default=1, ge=1, le=5)


class GreetingOutput(BaseModel):
    """The greeting and the task queue of the worker that produced it."""

    text: str
    task_queue: str


GREETING = ActionPlugin(
    name="greeting",
    input_model=GreetingInput,
    output_model=GreetingOutput,
    function="wfa_greeting.impl:greet",
)
