"""Each action's input is checked at validation by the model its activity uses (the registry)."""

from __future__ import annotations

from typing import Any

import pytest

from interpreter.actions import ACTION_INPUTS, KNOWN_ACTIONS, EchoInput, HttpInput, status_accepted
from interpreter.schema import definition_schema
from interpreter.validate import DefinitionError, load_definition


def http_task(**fields: Any) -> dict[str, Any]:
    return {"name": "test", "steps": [{"id": "call", "type": "task", "action": "http", "input": fields}]}


def problems(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    return [(p.path, p.message) for p in info.value.problems]


def test_the_registry_is_the_one_list_of_actions() -> None:
    assert KNOWN_ACTIONS[:2] == ("http", "echo")
    assert {"email", "sms", "call", "sms_status", "webhook", "sql", "llm"} <= set(KNOWN_ACTIONS)
    assert ACTION_INPUTS["http"] is HttpInput
    assert ACTION_INPUTS["echo"] is EchoInput
    schema = definition_schema()
    assert schema["$defs"]["TaskStep"]["properties"]["action"]["enum"] == list(KNOWN_ACTIONS)


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"urll": "http://x"}, "$.steps[0].input.urll", "unknown field"),
        ({"urll": "http://x"}, "$.steps[0].input.url", "required field is missing"),
        ({"url": "http://x", "method": "TRACE"}, "$.steps[0].input.method", "'GET', 'POST'"),
        ({"url": "ftp://x"}, "$.steps[0].input.url", "http:// or https://"),
        ({"url": "http://x", "timeout_s": "3"}, "$.steps[0].input.timeout_s", "valid number"),
        ({"url": "http://x", "timeout_s": 0}, "$.steps[0].input.timeout_s", "greater than 0"),
        ({"url": "http://x", "accept_status": ["2xx", "6xx"]}, "$.steps[0].input.accept_status[1]", "'5xx'"),
        ({"url": "http://x", "accept_status": [700]}, "$.steps[0].input.accept_status", "700"),
        ({"url": "http://x", "headers": {"A": 1}}, "$.steps[0].input.headers.A", "valid string"),
    ],
)
def test_a_bad_http_input_is_refused_at_validation_with_its_path(
    fields: dict[str, Any], path: str, message: str
) -> None:
    found = problems(http_task(**fields))
    assert any(p == path and message in m for p, m in found), found


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "hOsT",
        "Content-Length",
        "transfer-encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "proxy-connection",
    ],
)
def test_an_http_header_that_is_the_clients_is_refused_at_validation(name: str) -> None:
    found = problems(http_task(url="http://x", headers={"X-Ok": "1", name: "{{ input.v }}"}))
    assert found == [
        ("$.steps[0].input.headers", f"header {name!r} is set by the HTTP client, not by the input")
    ]


def test_a_header_name_that_is_not_a_token_is_refused_at_validation() -> None:
    # Dict keys are never rendered: a "{{ ... }}" name would be sent as is.
    found = problems(http_task(url="http://x", headers={"{{input.h}}": "1"}))
    assert found == [
        (
            "$.steps[0].input.headers",
            "header '{{input.h}}' has an invalid name or a line break or other control character in its value",
        )
    ]


def test_a_templated_headers_object_is_left_for_run_time() -> None:
    load_definition(http_task(url="http://x", headers="{{ input.headers }}"))


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "{{ input.api }}/x", "method": "{{ input.method }}", "timeout_s": "{{ input.t }}"},
        {"url": "http://x", "accept_status": ["{{ input.code }}", 404, "4xx", "any"]},
        {"url": "http://x", "headers": "{{ input.headers }}", "params": {"q": "{{ input.q }}"}},
        {"url": "http://x", "json": {"anything": ["goes", 1, None]}, "method": "post"},
    ],
)
def test_template_strings_stand_for_typed_values_until_run_time(fields: dict[str, Any]) -> None:
    load_definition(http_task(**fields))


def test_a_template_does_not_excuse_an_unknown_field() -> None:
    found = problems(http_task(url="http://x", urll="{{ input.url }}"))
    assert found == [("$.steps[0].input.urll", "unknown field")]


def test_echo_input_types_are_checked_and_other_keys_are_data() -> None:
    load_definition(
        {"name": "t", "steps": [{"id": "e", "type": "task", "action": "echo", "input": {"sku": 1}}]}
    )
    bad = {"name": "t", "steps": [{"id": "e", "type": "task", "action": "echo", "input": {"sleep_s": "1"}}]}
    assert problems(bad) == [("$.steps[0].input.sleep_s", "Input should be a valid number")]


@pytest.mark.parametrize(
    ("status", "accept", "accepted"),
    [
        (200, [], True),
        (299, [], True),
        (404, [], False),
        (404, [404], True),
        (404, ["4xx"], True),
        (500, ["4xx"], False),
        (503, ["5xx"], True),
        (302, ["2xx", "3xx"], True),
        (500, ["any"], True),
        (201, [200], False),
    ],
)
def test_status_classes(status: int, accept: list[Any], accepted: bool) -> None:
    assert status_accepted(status, accept) is accepted
