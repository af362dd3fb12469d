"""The ``email``, ``sms``, ``call``, ``sms_status`` and ``webhook`` inputs are checked at validation
(``load_definition`` and ``wfa validate``, exit 2 naming the JSON path), templates left for run time,
and described in the published JSON Schema; the ``email`` action's HTML is rendered with autoescaping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interpreter.actions import ACTION_INPUTS, ACTION_OUTPUTS, AUTOESCAPED_INPUTS
from interpreter.schema import definition_schema
from interpreter.templates import render, render_html
from interpreter.validate import DefinitionError, load_definition
from starter.cli import EXIT_BAD_INPUT, main


def task(action: str, **fields: Any) -> dict[str, Any]:
    return {"name": "test", "steps": [{"id": "notify", "type": "task", "action": action, "input": fields}]}


def problems(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    return [(p.path, p.message) for p in info.value.problems]


EMAIL = {"to": "a@b.example", "subject": "Hi", "text": "Hello"}


@pytest.mark.parametrize(
    ("action", "fields", "path", "message"),
    [
        ("email", {**EMAIL, "to": "not-an-address"}, "$.steps[0].input.to[0]", "is not an email address"),
        ("email", {**EMAIL, "cc": ["ok@b.example", "x@y"]}, "$.steps[0].input.cc[1]", "not an email address"),
        ("email", {"to": "a@b.example", "subject": "Hi"}, "$.steps[0].input", "give text, html or both"),
        ("email", {**EMAIL, "attachment": []}, "$.steps[0].input.attachment", "unknown field"),
        (
            "email",
            {**EMAIL, "attachments": [{"filename": "../etc/passwd", "content_text": "x"}]},
            "$.steps[0].input.attachments[0].filename",
            "must be a file name",
        ),
        (
            "email",
            {**EMAIL, "attachments": [{"filename": "a.txt"}]},
            "$.steps[0].input.attachments[0]",
            "exactly one of content_text and content_base64",
        ),
        ("email", {**EMAIL, "account": "smtp"}, "$.steps[0].input.account", "should match pattern"),
        ("email", {**EMAIL, "timeout_s": 0}, "$.steps[0].input.timeout_s", "greater than 0"),
        ("sms", {"to": "3125550100", "body": "x"}, "$.steps[0].input.to", "E.164"),
        ("sms", {"to": "+13125550100"}, "$.steps[0].input.body", "required field is missing"),
        ("sms", {"to": "+13125550100", "body": ""}, "$.steps[0].input.body", "at least 1 character"),
        ("call", {"to": "+13125550100"}, "$.steps[0].input", "exactly one of twiml and url"),
        ("call", {"to": "+13125550100", "url": "ftp://x"}, "$.steps[0].input.url", "http:// or https://"),
        ("sms_status", {"sid": "SM 1"}, "$.steps[0].input.sid", "should match pattern"),
        ("call_status", {"sid": "CA 1"}, "$.steps[0].input.sid", "should match pattern"),
        (
            "webhook",
            {"url": "http://x", "headers": {"webhook-id": "mine"}},
            "$.steps[0].input.headers",
            "set by the action",
        ),
        (
            "webhook",
            {"url": "http://x", "secret": "${secret:X}"},
            "$.steps[0].input.secret",
            "should match pattern",
        ),
        ("webhook", {"payload": {}}, "$.steps[0].input.url", "required field is missing"),
    ],
)
def test_a_bad_input_is_refused_at_validation_with_its_path(
    action: str, fields: dict[str, Any], path: str, message: str
) -> None:
    found = problems(task(action, **fields))
    assert any(p == path and message in m for p, m in found), found


@pytest.mark.parametrize(
    "name", ["Host", "content-length", "Transfer-Encoding", "CONNECTION", "TE", "Proxy-Foo"]
)
def test_a_webhook_header_that_is_the_clients_is_refused_at_validation(name: str) -> None:
    found = problems(task("webhook", url="http://x", headers={name: "x"}))
    assert found == [
        ("$.steps[0].input.headers", f"header {name!r} is set by the HTTP client, not by the input")
    ]


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({**EMAIL, "subject": "Hi\x0cthere"}, "$.steps[0].input.subject"),
        ({**EMAIL, "subject": "Hi\u2028Bcc: x@evil.example"}, "$.steps[0].input.subject"),
        ({**EMAIL, "to": "Ann\x85 <a@b.example>"}, "$.steps[0].input.to[0]"),
        ({**EMAIL, "reply_to": "Ann\x1c <a@b.example>"}, "$.steps[0].input.reply_to"),
        ({**EMAIL, "from": "Ann\u2029 <a@b.example>"}, "$.steps[0].input.from"),
    ],
)
def test_an_email_header_with_a_line_separator_is_refused_at_validation(
    fields: dict[str, Any], path: str
) -> None:
    found = problems(task("email", **fields))
    assert [p for p, _ in found] == [path], found


def test_a_subject_line_break_still_becomes_a_space() -> None:
    load_definition(task("email", **{**EMAIL, "subject": "Hi\r\nthere\tyou"}))


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        (
            "email",
            {"to": "{{ input.family.email }}", "subject": "Hi {{ input.name }}", "html": "<p>{{ x }}</p>"},
        ),
        (
            "email",
            {"to": ["{{ input.a }}", "b@c.example"], "bcc": "{{ input.bcc }}", "text": "t", "subject": "s"},
        ),
        ("email", {**EMAIL, "attachments": "{{ input.files }}", "timeout_s": "{{ input.t }}"}),
        ("email", {**EMAIL, "from": "Outreach <outreach@school.example>", "reply_to": "x@y.example"}),
        ("sms", {"to": "{{ input.phone }}", "body": "Hello {{ input.name }}", "from": "+13125550199"}),
        ("call", {"to": "+13125550100", "twiml": "<Response><Say>Hi</Say></Response>"}),
        ("sms_status", {"sid": "{{ input.sid }}"}),
        ("call_status", {"sid": "{{ input.call_sid }}"}),
        (
            "webhook",
            {"url": "{{ input.hook }}", "payload": {"id": "{{ input.id }}"}, "secret": "PARTNER_SECRET"},
        ),
    ],
)
def test_good_and_templated_inputs_pass(action: str, fields: dict[str, Any]) -> None:
    load_definition(task(action, **fields))


def test_the_actions_are_registered_with_their_models_and_in_the_schema() -> None:
    schema = definition_schema()
    enum = schema["$defs"]["TaskStep"]["properties"]["action"]["enum"]
    for name in ("email", "sms", "call", "sms_status", "call_status", "webhook"):
        assert name in enum
        assert name in ACTION_OUTPUTS
        model = ACTION_INPUTS[name].__name__
        assert model in schema["$defs"]
        assert ACTION_INPUTS[name].model_config.get("strict") is True
        assert ACTION_INPUTS[name].model_config.get("extra") == "forbid"
    email = schema["$defs"]["EmailInput"]["properties"]
    assert "from" in email  # by its JSON name
    assert AUTOESCAPED_INPUTS["email"] == ("html",)


def test_html_is_autoescaped_and_other_fields_are_not() -> None:
    context = {"input": {"name": "<b>Ann</b> & co", "raw": "<i>ok</i>"}}
    assert render_html("<p>{{ input.name }}</p>", context) == "<p>&lt;b&gt;Ann&lt;/b&gt; &amp; co</p>"
    assert render_html("{{ input.name }}", context) == "&lt;b&gt;Ann&lt;/b&gt; &amp; co"
    assert render_html("{{ input.raw | safe }}", context) == "<i>ok</i>"  # the author's choice
    assert render("Hi {{ input.name }}", context) == "Hi <b>Ann</b> & co"


def test_wfa_validate_names_the_bad_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "bad-messaging",
                "steps": [
                    {
                        "id": "mail",
                        "type": "task",
                        "action": "email",
                        "input": {"to": "nobody", "subject": "s"},
                    },
                    {
                        "id": "text",
                        "type": "task",
                        "action": "sms",
                        "input": {"to": "+13125550100", "bodyy": "x"},
                    },
                    {
                        "id": "hook",
                        "type": "task",
                        "action": "webhook",
                        "input": {"url": "file:///etc/passwd"},
                    },
                ],
            }
        )
    )
    code = main(["--address", "127.0.0.1:1", "validate", str(bad)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT == 2
    assert "$.steps[0].input.to[0]: 'nobody' is not an email address" in err
    assert "$.steps[1].input.bodyy: unknown field" in err
    assert "$.steps[1].input.body: required field is missing" in err
    assert "$.steps[2].input.url: must be an absolute http:// or https:// URL" in err
    assert "Traceback" not in err


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    ("section", "action"),
    [
        ("### The `email` action", "email"),
        ("### Text messages and calls", "sms"),
        ("### The `webhook` action", "webhook"),
    ],
)
def test_the_readme_examples_of_the_actions_are_valid(section: str, action: str) -> None:
    text = README.read_text(encoding="utf-8").split(section, 1)[1].split("\n### ", 1)[0]
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    definition = load_definition(json.loads(block))
    assert action in {getattr(step, "action", None) for step in definition.steps}
