"""A Responses request validated as OpenAI validates it (the SDK's types), and what is served of it upstream."""

from typing import Any

import pytest
from pydantic import ValidationError

from chat_gateway.openai_api.responses.protocol import ResponseCreate

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}
SCHEMA = {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True}


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"reasoning": {"effort": "enormous"}}, ("reasoning", "effort")),
        ({"text": {"format": {"type": "json_schema", "name": "city"}}}, ("text", "format", "json_schema", "schema")),
        ({"text": {"format": {"type": "yaml"}}}, ("text", "format")),
        ({"tools": [{"type": "function"}]}, ("tools", 0, "function", "name")),
        ({"tools": [{"type": "function", "name": ""}]}, ("tools",)),
        ({"tools": [{"type": "spreadsheet"}]}, ("tools", 0)),
        ({"tool_choice": "always"}, ("tool_choice",)),
        ({"conversation": {"name": "no id"}}, ("conversation",)),
    ],
)
def test_what_openai_refuses_is_refused_naming_its_field(fields: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as refused:
        ResponseCreate.model_validate({"input": "Hi", **fields})
    first = refused.value.errors()[0]["loc"]
    assert first[: len(where)] == where


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [{"type": "web_search"}]},
        {"tools": [WEATHER, {"type": "mcp", "server_label": "deepwiki"}]},
        {"tool_choice": {"type": "web_search_preview"}},
        {"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "image_generation"}]}},
    ],
)
def test_what_openai_serves_but_this_gateway_does_not_is_refused_as_such(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="only function tools are served here"):
        ResponseCreate.model_validate({"input": "Hi", **fields})


def test_function_tools_and_options_are_chat_completions_parameters_upstream() -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}
    request = ResponseCreate.model_validate(
        {"input": "Hi", "tools": [WEATHER], "tool_choice": choice, "text": {"format": SCHEMA}}
        | {"reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 64}
    )
    options = request.chat_options()
    function = {"name": "get_weather", "parameters": {"type": "object"}, "strict": True}
    assert options["tools"] == [{"type": "function", "function": function}]
    named = [{"type": "function", "function": {"name": "get_weather"}}]
    assert options["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": named}}
    schema = {"name": "city", "schema": {"type": "object"}, "strict": True}
    assert options["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert (options["reasoning_effort"], options["max_tokens"]) == ("low", 64)


def test_a_named_function_is_chat_completions_tool_choice() -> None:
    request = ResponseCreate.model_validate({"input": "Hi", "tool_choice": {"type": "function", "name": "f"}})
    assert request.chat_options()["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert ResponseCreate.model_validate({"input": "Hi", "tool_choice": "required"}).chat_options() == {
        "tool_choice": "required"
    }


def test_what_is_kept_of_a_request_is_json_as_openai_spells_it() -> None:
    request = ResponseCreate.model_validate(
        {"input": "Hi", "tools": [WEATHER], "text": {"format": SCHEMA}, "reasoning": {"effort": "high"}}
        | {"tool_choice": {"type": "function", "name": "get_weather"}, "conversation": {"id": "conv_1"}}
    )
    asked = request.asked(1)
    assert asked["tools"] == [WEATHER]
    assert asked["text"] == {"format": SCHEMA}  # "schema", not the SDK's attribute "schema_"
    assert (asked["reasoning"], asked["tool_choice"]) == (
        {"effort": "high"},
        {"type": "function", "name": "get_weather"},
    )
    assert request.conversation_id() == "conv_1"
