"""Tool calling through the real server on the default model with the official openai client:
tool_choice "required" and a named function always give calls whose arguments validate against
the tool's schema (the grammar), streamed exactly as returned whole; "auto" with the hermes parser;
a conversation carrying calls and their results; the offline LLM.chat with tools."""
from __future__ import annotations

import json
import os

import jsonschema
import pytest

from tests.helpers.server_checks import server_args
from tests.helpers.server_process import ServerProcess

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "data", "hermes_tools_template.jinja")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "book_table", "description": "Book a table at a restaurant.",
        "parameters": {"type": "object", "properties": {
            "people": {"type": "integer", "minimum": 1, "maximum": 12},
            "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "options": {"type": "object", "properties": {"terrace": {"type": "boolean"}},
                        "required": ["terrace"], "additionalProperties": False}},
            "required": ["people", "time", "options"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now."}},
]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in TOOLS}
QUESTIONS = ["What's the weather in Paris?", "Book a table for four at eight tonight, on the terrace.",
             "What time is it?"]


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    flags = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--chat-template", TEMPLATE)
    with ServerProcess(server_args(smollm2_gguf, smollm2_tokenizer_dir, *flags)) as s:
        yield s


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


def _ask(client, model, question, **kwargs):
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 100)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                          tools=TOOLS, **kwargs)


def _calls(message) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def _streamed(client, model, question, **kwargs) -> tuple[str | None, list[tuple[str, str]], str | None]:
    content, calls, finish = "", [], None
    for chunk in _ask(client, model, question, stream=True, **kwargs):
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            if call.id is not None:  # id and name come first
                assert call.index == len(calls) and call.function.name
                calls.append((call.function.name, ""))
            name, arguments = calls[call.index]
            calls[call.index] = (name, arguments + (call.function.arguments or ""))
    return content or None, calls, finish


def _check_valid(calls: list[tuple[str, str]], finish_reason: str = "tool_calls") -> None:
    """Every call's arguments valid for its tool's schema; cut by max_tokens, all but the last."""
    assert calls and finish_reason in ("tool_calls", "length")
    for name, arguments in calls[:-1] if finish_reason == "length" else calls:
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


# The 135M model, given free rein, repeats a call until max_tokens: with parallel calls an answer may
# end by length (its last call then cut short); with one call it always ends.
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 7, "parallel_tool_calls": False}])
def test_required_always_gives_valid_calls_and_streams_the_same(client, model, question, sampling):
    response = _ask(client, model, question, tool_choice="required", **sampling)
    choice = response.choices[0]
    assert choice.message.content is None
    if "parallel_tool_calls" in sampling:
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    _check_valid(_calls(choice.message), choice.finish_reason)
    assert all(c.id.startswith("call_") and c.type == "function" for c in choice.message.tool_calls)
    assert _streamed(client, model, question, tool_choice="required", **sampling) == (
        None, _calls(choice.message), choice.finish_reason)


@pytest.mark.parametrize("name", ["book_table", "get_time"])
def test_a_named_function_gets_valid_arguments(client, model, name):
    choice = _ask(client, model, QUESTIONS[1], tool_choice={"type": "function", "function": {"name": name}}).choices[0]
    [(called, arguments)] = _calls(choice.message)
    assert called == name and choice.finish_reason == "tool_calls"
    _check_valid([(called, arguments)])


def test_auto_streams_what_it_returns_whole(client, model):
    for question in QUESTIONS:
        choice = _ask(client, model, question).choices[0]
        content, calls = choice.message.content, _calls(choice.message)
        assert _streamed(client, model, question) == (content, calls, choice.finish_reason)
        assert choice.finish_reason == ("tool_calls" if calls else "stop") or choice.finish_reason == "length"


def test_a_conversation_with_calls_and_results(client, model):
    first = _ask(client, model, QUESTIONS[0], tool_choice="required").choices[0].message
    messages = [{"role": "user", "content": QUESTIONS[0]}, first.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": "18 degrees, light rain"}
                 for call in first.tool_calls]
    answer = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="none",
                                            max_tokens=30, temperature=0.0).choices[0]
    assert answer.message.content and not answer.message.tool_calls




def test_offline_chat_shows_the_tools_to_the_template(smollm2_llm):
    from pagedllm import SamplingParams

    template = open(TEMPLATE).read()
    [out] = smollm2_llm.chat([{"role": "user", "content": QUESTIONS[0]}], SamplingParams(max_tokens=5),
                             chat_template=template, tools=TOOLS, use_tqdm=False)
    assert '"name": "get_weather"' in out.prompt and "<tools>" in out.prompt
