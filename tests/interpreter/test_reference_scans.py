"""Secret references are found in time linear in the text (found by an attacker's probe: the
patterns backtracked from every ``${secret:`` to the next ``}``, or to the end of the text when
none followed, so ``${secret:`` repeated over 100 KB of a template took 10.5 s to read, 64 KiB of
``$${secret:`` in a step's input 4.75 s in the activity, and 2 MB would have taken hours). The
linear scans find exactly what the patterns find: compared on random texts made of the pieces that
matter."""

from __future__ import annotations

import random
import re

from interpreter import templates
from interpreter.inert import SECRET_REF, sub_references
from interpreter.model import parse_definition

PIECES = ["${secret:", "$", "{", "}", "{{", "{%", "a", "B_1", "\ue000", "\ue001", " ", "secret:", "\n"]
TEMPLATED_SECRET = re.compile(r"\$\{secret:[^}]*\{[{%]")
"""The pattern the scan replaced."""


def _texts(count: int) -> list[str]:
    draw = random.Random(20261206)
    return ["".join(draw.choice(PIECES) for _ in range(draw.randint(0, 14))) for _ in range(count)]


def _shown(match: re.Match[str]) -> str:
    return f"<{match.group(1)}|{match.group(2)}>"


def test_the_scans_find_what_the_patterns_found() -> None:
    for text in _texts(30_000):
        assert sub_references(SECRET_REF, _shown, text) == SECRET_REF.sub(_shown, text), repr(text)
        author = templates._AUTHOR_REFERENCE
        assert sub_references(author, _shown, text, "\ue000\ue001") == author.sub(_shown, text), repr(text)
        assert templates._templated_secret(text) == (TEMPLATED_SECRET.search(text) is not None), repr(text)


def test_two_megabytes_of_reference_starts_are_read() -> None:
    starts = "${secret:" * 230_000  # 2 MB, no closing brace
    assert sub_references(SECRET_REF, _shown, starts) == starts
    assert sub_references(SECRET_REF, _shown, "$" + starts) == "$" + starts
    assert not templates._templated_secret(starts + "}")
    closed = sub_references(SECRET_REF, _shown, starts + "}")
    assert closed == "<|" + starts[len("${secret:") :] + ">"
    # In a template's text: read (its references are the author's, marked), not refused.
    definition = parse_definition(
        {
            "name": "refs",
            "steps": [{"id": "s", "type": "set", "vars": {"v": "{{ 1 }}" + "${secret:" * 20_000}}],
        }
    )
    assert definition.steps[0].id == "s"
