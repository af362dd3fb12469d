"""Loading definitions from files, JSON text or mappings (no Temporal SDK, no database driver).

:func:`load` is what ``wfa validate`` needs, so it lives apart from the client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interpreter.model import Definition
from interpreter.validate import (
    DefinitionError,
    Problem,
    check_definition,
    legacy_trigger_problems,
    link_problems,
    load_definition,
    new_definition_problems,
    unstorable_text_problems,
)
from starter.errors import DefinitionFileNotFoundError
from starter.inputs import brief, read_text_file

__all__ = ["DefinitionSource", "document", "load", "parse"]

DefinitionSource = Definition | Mapping[str, Any] | str | os.PathLike[str]
"""A definition: a parsed one, a dict, JSON text, or the path of a JSON file."""


def load(definition: DefinitionSource) -> Definition:
    """Loads and validates a definition from any :data:`DefinitionSource`.

    A ``str`` whose first non-blank character is ``{`` is JSON text; any other ``str`` is a path.

    Args:
        definition: A :class:`Definition` (returned as is), a mapping, JSON text or a file path.

    Returns:
        The validated definition.

    Raises:
        DefinitionError: Listing every problem with its JSON path.
        DefinitionFileNotFoundError: A path was given and there is no such file.
    """
    if isinstance(definition, Definition):
        # A model built in code has passed parsing but not the whole-tree rules.
        problems = (
            unstorable_text_problems(definition)
            + new_definition_problems(definition)
            + check_definition(definition)
        )
        if problems:
            raise DefinitionError(problems, definition.name)
        return definition
    if isinstance(definition, Mapping):
        return _parse(definition)
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        return _parse(definition)
    return _parse(_read_file(definition))


def parse(text: str) -> Definition:
    """A definition from its JSON text: :func:`load` of text, never taken for a path (``load``
    reads a string not starting with ``{`` as a file's path: a file's text with a byte-order mark,
    or empty, was "definition file not found: ...", found by a probe).

    Raises:
        DefinitionError: Listing every problem with its JSON path.
    """
    return _parse(text)


def _parse(document: Mapping[str, Any] | str) -> Definition:
    """:func:`load_definition`, with JSON the parser cannot take reported as a problem too."""
    try:
        definition = load_definition(document)
    except DefinitionError as err:
        legacy = _legacy_in(document)
        if any(problem.path == "$.trigger" for problem in err.problems):
            legacy = []
        parsed = err.definition  # (None when it did not parse: no link problems to tell)
        links = [] if parsed is None else [p for p in link_problems(parsed) if p not in err.problems]
        if legacy or links:
            raise DefinitionError(legacy + err.problems + links, err.name) from None
        raise
    except ValidationError as err:  # a model built while checking (none is known to fail here)
        messages = "; ".join(str(e.get("msg", "")) for e in err.errors()[:5])
        raise DefinitionError([Problem("$", f"invalid definition: {brief(messages, 1000)}")]) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise DefinitionError([Problem("$", f"not valid JSON: {err}")]) from None
    except RecursionError:
        raise DefinitionError([Problem("$", "nested too deeply")]) from None
    refused = new_definition_problems(definition)
    if refused:
        raise DefinitionError(refused, definition.name)
    return definition


def _legacy_in(document: Mapping[str, Any] | str) -> list[Problem]:
    """The legacy ``trigger`` problem of a document that failed validation for other reasons too."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):
            return []
    return legacy_trigger_problems(document)


def document(definition: DefinitionSource) -> Definition | Mapping[str, Any] | str:
    """The document to register: a Definition or mapping as is, JSON text as is, a file's text."""
    if isinstance(definition, Definition | Mapping):
        return definition
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        return definition
    return _read_file(definition)


def _read_file(definition: str | os.PathLike[str]) -> str:
    """The text of the definition file at ``definition``.

    Raises:
        DefinitionFileNotFoundError: No such file.
        DefinitionError: It cannot be read: not UTF-8, a NUL in its path, a directory, ...
    """
    if not isinstance(definition, str | os.PathLike) or definition == "":  # (TypeError, or ".": a probe)
        given = brief(definition)
        raise DefinitionError(
            [Problem("$", f"a definition is a file path, JSON text, a mapping or a Definition, not {given}")]
        )
    path = Path(definition)
    try:
        return read_text_file(path)
    except FileNotFoundError:
        raise DefinitionFileNotFoundError(str(definition)) from None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, or a NUL in the path
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DefinitionError([Problem("$", f"cannot read {brief(str(path), 300)}: {detail}")]) from None
