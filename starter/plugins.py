"""Which action plugins the client, the CLI and the worker load (see the README, "Your own actions").

Plugins come from installed packages' entry points (group ``wfa.actions``) and from
``WFA_ACTION_MODULES``: comma-separated ``module`` or ``module:attribute`` names of
:class:`~interpreter.actions.ActionPlugin` objects, for a package that is on the path but not
installed (a monorepo, a test). Loading imports only the plugin objects (their models); the worker
imports the functions (:mod:`activities.plugins`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from interpreter.actions import ActionPlugin, load_action_plugins

__all__ = ["ACTION_MODULES_ENV", "load_configured_action_plugins"]

ACTION_MODULES_ENV = "WFA_ACTION_MODULES"
"""Comma-separated modules (``module`` or ``module:attribute``) holding action plugins."""


def load_configured_action_plugins(environ: Mapping[str, str] | None = None) -> tuple[ActionPlugin, ...]:
    """Registers the plugins of the installed entry points and of ``WFA_ACTION_MODULES``.

    Returns:
        Every registered plugin.

    Raises:
        interpreter.actions.ActionPluginError: A plugin cannot be loaded or clashes by name.
    """
    env = os.environ if environ is None else environ
    modules = [item.strip() for item in env.get(ACTION_MODULES_ENV, "").split(",") if item.strip()]
    return load_action_plugins(modules)
