"""A definition's templates and expressions are bounded in tokens, before any is compiled (found by
an attacker's probe: a definition of 1.5 MB of templates, ``{{ input.a }}x`` repeated, took 24 s to
read, and a worker 16 s of a run's first workflow task, once for every such definition, since reading
a definition compiles every template in it)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from interpreter import templates
from interpreter.model import Definition, parse_definition
from interpreter.templates import (
    MAX_DEFINITION_TEMPLATE_TOKENS,
    TemplateError,
    TemplateTokensError,
    bounded_template_tokens,
    check_template,
    template_tokens_watch,
)

UNIT = "{{ input.a }}x"
"""Six tokens: ``{{``, ``input``, ``.``, ``a``, ``}}`` and the text ``x``."""


def _setting(*templates_: str, when: str | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "type": "set", "vars": {"v": text}} for i, text in enumerate(templates_)
    ]
    if when is not None:
        steps[0]["when"] = when
    return {"name": "tokens", "steps": steps}


def _refusals(err: ValidationError) -> list[str]:
    return [str(e["msg"]) for e in err.errors() if "tokens together" in str(e["msg"])]


def test_the_attack_is_refused_and_nothing_of_it_compiled() -> None:
    attack = "{{ input.a }}x" * 107_000  # 1.5 MB
    compiled_before = templates._compile_template.misses()
    with pytest.raises(ValidationError) as refused:
        parse_definition(_setting(attack))
    assert templates._compile_template.misses() == compiled_before
    [message] = _refusals(refused.value)
    assert f"more than {MAX_DEFINITION_TEMPLATE_TOKENS:,} tokens together" in message
    assert "split the definition" in message


def test_the_bound_is_exact() -> None:
    at_bound = UNIT * 1666 + "{{ b }}x"  # 9,996 + 4
    parse_definition(_setting(at_bound))
    past = UNIT * 1666 + "{{ b.c }}"  # 9,996 + 5
    with pytest.raises(ValidationError) as refused:
        parse_definition(_setting(past))
    assert len(_refusals(refused.value)) == 1


def test_every_template_and_expression_of_a_definition_counts_toward_one_bound() -> None:
    half = UNIT * 1000  # 6,000 tokens
    parse_definition(_setting(half))
    with pytest.raises(ValidationError) as two:
        parse_definition(_setting(half, "{{ b }}" + half))  # (the same one twice counts once)
    assert len(_refusals(two.value)) == 1
    condition = " and ".join(["input.a == 1"] * 1000)  # 6,000 tokens less one, as an expression
    with pytest.raises(ValidationError) as expression:
        parse_definition(_setting(half, when=condition))
    assert len(_refusals(expression.value)) == 1


def test_past_the_bound_one_problem_is_named_and_nothing_more_is_compiled() -> None:
    many = [f"{{{{ input.n{i} }}}}" + UNIT * 33 for i in range(100)]  # 100 templates of 203 tokens
    compiled_before = templates._compile_template.misses()
    with pytest.raises(ValidationError) as refused:
        parse_definition(_setting(*many))
    assert len(refused.value.errors()) == 1
    assert len(_refusals(refused.value)) == 1
    # The first 49 fit (9,947 tokens), and were compiled; the 50th went over; none after it compiled.
    assert templates._compile_template.misses() - compiled_before == 49


def test_a_template_alone_is_bounded_too() -> None:
    with bounded_template_tokens():
        check_template(UNIT * 1666)
        with template_tokens_watch() as watch, pytest.raises(TemplateTokensError, match="holds more than"):
            check_template(UNIT * 1667)
    assert watch.exceeded


def test_other_errors_do_not_read_as_too_many_tokens() -> None:
    with template_tokens_watch() as watch, pytest.raises(ValidationError):
        parse_definition(_setting("{{ input.a "))
    assert not watch.exceeded
    with bounded_template_tokens(), pytest.raises(TemplateError, match="syntax error"):
        check_template("{{ 'open " + UNIT * 2000)  # the lexer stops at the open quote: not refused for tokens


def test_read_back_as_before_outside_an_authors_reading() -> None:
    """How the worker reads a definition back from a recorded activity result, or the input of a
    run recorded before the bound: its replay must compile what it compiled then."""
    document = _setting(UNIT * 1700)
    with pytest.raises(ValidationError):
        parse_definition(document)
    assert Definition.model_validate(document).steps[0].id == "s0"


def test_large_templates_are_cached_a_few_at_a_time() -> None:
    """A process caches what it compiled; a 1.9 MB text template (few tokens: it is within the
    bound) took 4.2 MB of the one cache, which kept 4,096 templates of any size (an attacker's
    probe: a tenant's 4,096 runs of distinct such templates would have taken a worker past 17 GB).
    Templates over 8 KiB now have a cache of their own, of 32."""
    small = "{{ input.kept_small }}"
    check_template(small)
    large = [
        f"{i}" + "<p>hello world</p>\n" * 500 + "{{ input.a }}"  # 9.5 KB
        for i in range(templates._LARGE_CACHE_SIZE + 8)
    ]
    for text in large:
        check_template(text)
    assert templates._compile_template.entries()[1] == templates._LARGE_CACHE_SIZE
    # The most recent large ones are kept, and the large ones did not push the small one out.
    before = templates._compile_template.misses()
    check_template(large[-1])
    check_template(small)
    assert templates._compile_template.misses() == before
    check_template(large[0])  # pushed out: compiled again
    assert templates._compile_template.misses() == before + 1


def test_a_long_number_is_refused_before_jinja_computes_with_it() -> None:
    """Jinja computes constant expressions as it compiles: six tokens, ``0x<1.3 million f> is
    divisibleby 0x<660,000 e>``, took 12 s to read (a review of the bound)."""
    attack = "{{ 0x" + "f" * 1_320_000 + " is divisibleby 0x" + "e" * 660_000 + " }}"
    with pytest.raises(ValidationError) as refused:
        parse_definition(_setting(attack))
    assert "a number of more than 100 characters" in str(refused.value)
    parse_definition(_setting("{{ " + "9" * 100 + " // 7 }}"))
    with pytest.raises(ValidationError, match="a number of more than 100"):
        parse_definition(_setting("{{ " + "9" * 101 + " // 7 }}"))
    with pytest.raises(ValidationError, match="a number of more than 100"):
        parse_definition(_setting("{{ 1 }}", when="x == 0x" + "f" * 200))


def test_comments_count() -> None:
    """Comments were not counted: 150,000 templates of ``{#{{%x#}`` took 43 s to read, and one of
    ``{#{{#}`` repeated to 2 MB was lexed to its end to count nothing (a review of the bound)."""
    many = ["{#{{%x#}" + str(i) for i in range(4000)]  # 4,000 distinct templates of 4 tokens
    with pytest.raises(ValidationError) as refused:
        parse_definition({"name": "c", "steps": [{"id": "s", "type": "set", "vars": {"v": many}}]})
    assert len(_refusals(refused.value)) == 1
    with pytest.raises(ValidationError) as one:
        parse_definition(_setting("{#{{#}" * 330_000))
    assert len(_refusals(one.value)) == 1


def test_each_template_counts_at_least_ten_and_a_repeated_one_once() -> None:
    """Compiling costs about half a millisecond a template whatever it holds: 9,990 ``when``
    expressions of one token each took 5.6 s (a review of the bound)."""

    def guarded(count: int) -> dict[str, Any]:
        steps = [{"id": f"s{i}", "type": "set", "vars": {"v": i}, "when": f"a{i}"} for i in range(count)]
        return {"name": "w", "limits": {"max_step_executions": 20_000}, "steps": steps}

    parse_definition(guarded(1000))  # 1,000 x 10
    with pytest.raises(ValidationError) as refused:
        parse_definition(guarded(1001))
    assert len(_refusals(refused.value)) == 1
    same = [{"id": f"s{i}", "type": "set", "vars": {"v": UNIT * 100}} for i in range(2000)]
    parse_definition({"name": "same", "steps": same})  # one template of 600 tokens, 2,000 times


def test_text_counted_as_a_template_is_counted_again_as_an_expression() -> None:
    """A text first met as a step's message went uncounted, and unchecked for long numbers, when
    met again as an expression (a review): the expression was compiled all the same."""
    folded = "0x" + "f" * 400_000 + " is divisibleby 0x" + "e" * 200_000
    with pytest.raises(ValidationError, match="a number of more than 100"):
        parse_definition(
            {
                "name": "dual",
                "steps": [
                    {"id": "said", "type": "fail", "message": folded},
                    {"id": "guarded", "type": "set", "vars": {"v": 1}, "when": folded},
                ],
            }
        )
    sums = [" + ".join([f"a{k}"] * 3000) for k in range(2)]  # two expressions of 5,999 tokens
    steps: list[dict[str, Any]] = [{"id": f"m{k}", "type": "fail", "message": s} for k, s in enumerate(sums)]
    steps += [{"id": f"w{k}", "type": "set", "vars": {"v": 1}, "when": s} for k, s in enumerate(sums)]
    with pytest.raises(ValidationError) as refused:
        parse_definition({"name": "dual", "steps": steps})
    assert len(_refusals(refused.value)) == 1


def test_plain_text_is_neither_compiled_nor_counted() -> None:
    """It renders as it is; 2,000 approvals with messages of their own are not 2,000 templates."""
    steps = [
        {"id": f"a{i}", "type": "approval", "approvers": ["x"], "message": f"Please look at item {i}"}
        for i in range(2000)
    ]
    compiled = templates._compile_template.misses()
    parse_definition({"name": "plain", "limits": {"max_step_executions": 10_000}, "steps": steps})
    assert templates._compile_template.misses() == compiled
