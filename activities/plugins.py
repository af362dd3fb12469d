"""Teams' own actions on the worker: each registered :class:`~interpreter.actions.ActionPlugin`
becomes an activity named after it (see the README, "Your own actions").

Only here is a plugin's function imported: validation needs the models alone
(:func:`interpreter.actions.load_action_plugins`). The function is called as
``await function(input, request)``: its input parsed with the plugin's input model and the
:class:`~interpreter.actions.ActionRequest` (step path, idempotency key, tenant). It returns an
instance of the output model (or data the model accepts), dumped as the step's output. Errors are
handled as for every action (:func:`activities.base.action`): an ``ApplicationError`` keeps its type
and retryability, any other exception is retryable with its class name as the type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.base import action, invalid_input
from interpreter.actions import (
    ActionPlugin,
    ActionPluginError,
    ActionRequest,
    ActionResult,
    action_plugins,
    load_object,
    parse_action_input,
)

__all__ = ["plugin_activities", "plugin_activity"]


def plugin_activity(plugin: ActionPlugin) -> Callable[..., Coroutine[Any, Any, ActionResult]]:
    """The activity of one plugin (imports its function).

    Raises:
        ActionPluginError: The function cannot be imported or is not an ``async def``.
    """
    try:
        function = load_object(plugin.function)
    except Exception as err:  # an import error of any kind in a team's package
        raise ActionPluginError(
            f"action plugin {plugin.name!r}: cannot import {plugin.function}: {type(err).__name__}: {err}"
        ) from None
    if not inspect.iscoroutinefunction(function):
        raise ActionPluginError(f"action plugin {plugin.name!r}: {plugin.function} is not an async function")

    async def run_plugin(request: ActionRequest) -> Any:
        try:
            spec = parse_action_input(plugin.input_model, request.input)
        except ValidationError as exc:
            raise invalid_input(plugin.name, request.input, exc) from None
        result = await function(spec, request)
        if plugin.output_model is None:
            return result
        try:
            output = (
                result
                if isinstance(result, plugin.output_model)
                else plugin.output_model.model_validate(result)
            )
        except ValidationError as exc:
            raise ApplicationError(
                f"{plugin.name} returned an output its model refuses: {exc.error_count()} problem(s)",
                type="ActionOutputInvalid",
                non_retryable=True,
            ) from None
        return output.model_dump(mode="json")

    run_plugin.__name__ = run_plugin.__qualname__ = f"plugin_{plugin.name}".replace("-", "_").replace(
        ".", "_"
    )
    return action(plugin.name)(run_plugin)


def plugin_activities() -> list[Callable[..., Coroutine[Any, Any, ActionResult]]]:
    """The activities of every registered plugin (see :func:`interpreter.actions.load_action_plugins`)."""
    return [plugin_activity(plugin) for plugin in action_plugins()]
