"""Whether a run's definition is the one its content hash names, cheaply.

A run carries its definition in its input in compact form (the fields that hold their default are
left out, :class:`interpreter.state.RunInput`), and its content hash in the ``DefinitionHash``
search attribute its starter set. The worker fills the defaults back in; the generic workflow
checks the result against the hash, so a run is never reinterpreted by a worker whose defaults, or
whose reading of the document, differ from the starter's.

Hashing a definition costs about 0.4 ms (canonical JSON of every field, then sha256); a definition
equal to one already hashed in this process (runs of the same definition) is checked by equality
instead (about 0.04 ms). Definitions are compared field by field, and the hash is a function of the
fields, so an equal definition has the same hash.
"""

from __future__ import annotations

from interpreter.model import Definition
from interpreter.validate import definition_hash

__all__ = ["matches_hash"]

_VERIFIED: dict[str, Definition] = {}
"""Content hash -> a definition that was hashed to it in this process. Plain dict operations only
(each atomic under the GIL: workflow tasks run on several threads); emptied when full."""
_VERIFIED_MAX = 256


def matches_hash(definition: Definition, expected: str) -> bool:
    """Whether ``definition``'s content hash (:func:`interpreter.validate.definition_hash`) is
    ``expected``."""
    known = _VERIFIED.get(expected)
    if known is not None and (known is definition or known == definition):
        return True
    if definition_hash(definition) != expected:
        return False
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[expected] = definition
    return True
