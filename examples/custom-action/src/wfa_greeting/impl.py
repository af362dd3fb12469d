"""The ``greeting`` action's implementation: imported by workers only."""

from __future__ import annotations

from temporalio import activity

from interpreter.actions import ActionRequest
from wfa_greeting.spec import GreetingInput, GreetingOutput

_WORDS = {"en": "Hello", "fr": "Bonjour", "de": "Hallo"}


async def greet(spec: GreetingInput, request: ActionRequest) -> GreetingOutput:
    """Greets ``spec.name`` ``spec.times`` times, naming the task queue whose worker did it."""
    text = " ".join([f"{_WORDS[spec.language]}, {spec.name}!"] * spec.times)
    return GreetingOutput(text=text, task_queue=activity.info().task_queue)
