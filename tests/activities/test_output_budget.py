"""An action whose output is over the budget fails as a non-retryable step error naming the sizes,
before Temporal would refuse the payload."""

from __future__ import annotations

import dataclasses
import enum

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.base import action
from activities.echo import echo
from interpreter.actions import ActionRequest
from interpreter.sizes import ACTION_OUTPUT_BUDGET


async def test_an_output_over_the_budget_is_refused_naming_it() -> None:
    request = ActionRequest(step_id="big", idempotency_key="k", input={"value": "x" * ACTION_OUTPUT_BUDGET})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(echo, request)
    assert info.value.type == "ActionOutputTooLarge"
    assert info.value.non_retryable
    assert f"budget of {ACTION_OUTPUT_BUDGET} bytes" in info.value.message


async def test_an_output_holding_a_lone_surrogate_is_refused_naming_it() -> None:
    """No UTF-8 writes one: the result failed to serialise as a PydanticSerializationError, and the
    call was made again (a probe: an HTTP answer's ``"\\ud800"``; any action's output may)."""
    outputs = iter(["a\ud800b", {"k": ["\udfff"]}, {"\ud800": 1}, "\U0001f600 \x00"])

    @action("odd")
    async def odd(request: ActionRequest) -> object:
        return next(outputs)

    request = ActionRequest(step_id="odd", idempotency_key="k", input={})
    for _ in range(3):
        with pytest.raises(ApplicationError) as info:
            await ActivityEnvironment().run(odd, request)
        assert (info.value.type, info.value.non_retryable) == ("ActionOutputUnreadable", True)
        assert "lone surrogate" in info.value.message
    assert (await ActivityEnvironment().run(odd, request)).output == "\U0001f600 \x00"


async def test_an_output_within_the_budget_passes() -> None:
    request = ActionRequest(step_id="ok", idempotency_key="k", input={"value": "x" * 1000})
    result = await ActivityEnvironment().run(echo, request)
    assert result.output == "x" * 1000


async def test_the_budget_bounds_the_output_as_written_escapes_and_all() -> None:
    # Found by a review: 250,000 control characters counted 250,002 bytes and passed, but are
    # written as 1.5 MB (``\u0001`` each) into the run's history, whose guard counts each result
    # at the budget.
    escaped = "\x01" * 250_000
    request = ActionRequest(step_id="esc", idempotency_key="k", input={"value": escaped})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(echo, request)
    assert info.value.type == "ActionOutputTooLarge"
    assert "over 1500002 bytes" in info.value.message
    # Non-ASCII text is written as it is (UTF-8), quotes and backslashes take two bytes.
    for text in ("é" * 200_000, '"\\' * 60_000):
        request = ActionRequest(step_id="ok", idempotency_key="k", input={"value": text})
        assert (await ActivityEnvironment().run(echo, request)).output == text


class _Big(enum.Enum):
    BLOB = "z" * 600_000


@dataclasses.dataclass
class _Hidden:
    blob: str = dataclasses.field(repr=False)


@pytest.mark.parametrize("output", [_Big.BLOB, _Hidden("z" * 600_000), [{"k": _Big.BLOB}]])
async def test_an_object_is_measured_as_it_is_written(output: object) -> None:
    # Found by a review: an Enum or a dataclass was counted as its str (9 and 3 bytes here) and
    # written as 600 KB.
    @action("objects")
    async def objects(request: ActionRequest) -> object:
        return output

    request = ActionRequest(step_id="obj", idempotency_key="k", input={})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(objects, request)
    assert info.value.type == "ActionOutputTooLarge"
