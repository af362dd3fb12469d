"""Names of the actions workers register, for validating definitions without importing activities.

Kept free of imports so the workflow sandbox and the definition validator can use it cheaply; it
must match :data:`activities.ACTION_NAMES` (a test checks this).
"""

from __future__ import annotations

KNOWN_ACTIONS: tuple[str, ...] = ("http", "echo")
