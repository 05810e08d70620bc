"""Tool calling in chat completions over a fake engine with scripted replies: tools in the chat
template, each --tool-call-parser under tool_choice "auto", the grammars of "required" and a named
function, streams whose deltas add up to the whole response, and the 400s."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from pagedllm.tool_calls.tool_choice import FunctionTool, required_schema
from tests.helpers.fake_engine import FakeEngine, make_tokenizer

TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t.function.name }}"
    "{{ t.function.parameters | tojson }}{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} "
    "| tojson }}</tool_call>{% endfor %}{% if m.tool_call_id %} ({{ m.tool_call_id }}){% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [WEATHER, TIME]
ASK = {"messages": [{"role": "user", "content": "Weather in Paris, and the time?"}], "tools": TOOLS}

REPLIES = {
    "hermes": 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
    "llama3_json": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
                   '{"name": "get_time", "parameters": {}}',
    "mistral": 'Let me look.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
               '{"name": "get_time", "arguments": {}}]',
    "pythonic": '[get_weather(city="Paris"), get_time()]',
}
CALLS = [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]


def _client(reply: str, parser: str | None = "hermes", reasoning: str | None = None) -> tuple[TestClient, FakeEngine]:
    tokenizer = make_tokenizer()
    tokenizer.chat_template = TEMPLATE
    engine = FakeEngine(tokenizer=tokenizer, reply=lambda k: reply, max_model_len=4096)
    settings = ServerSettings(tool_call_parser=parser, enable_auto_tool_choice=parser is not None,
                              reasoning_parser=reasoning)
    return TestClient(build_app(engine, settings), raise_server_exceptions=False), engine


def _calls(message: dict) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]


def _stream(client: TestClient, body: dict) -> tuple[dict, str]:
    """The stream's deltas assembled into a message, and its finish_reason."""
    content, reasoning, calls, finish = "", "", [], None
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[6:])["choices"][0]
            delta, finish = choice["delta"], choice["finish_reason"] or finish
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls", []):
                if "id" in call:  # a call's first delta: its id, type and name
                    assert call["index"] == len(calls) and call["type"] == "function" and call["function"]["name"]
                    calls.append({"id": call["id"], "type": "function",
                                  "function": {"name": call["function"]["name"], "arguments": ""}})
                calls[call["index"]]["function"]["arguments"] += call["function"].get("arguments", "")
    message = {"role": "assistant", "content": content or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message, finish


def _without_ids(message: dict) -> dict:
    return {**message, "tool_calls": [{**c, "id": None} for c in message.get("tool_calls", [])]}


@pytest.mark.parametrize("parser", sorted(REPLIES))
def test_auto_parses_each_format_and_streams_the_same(parser):
    client, engine = _client(REPLIES[parser], parser)
    with client:
        body = client.post("/v1/chat/completions", json=ASK).json()
        choice = body["choices"][0]
        message = choice["message"]
        assert _calls(message) == CALLS and choice["finish_reason"] == "tool_calls"
        assert message["content"] == ("Let me look." if parser in ("hermes", "mistral") else None)
        assert all(c["id"] and c["type"] == "function" for c in message["tool_calls"])
        streamed, finish = _stream(client, ASK)
        assert _without_ids(streamed) == _without_ids(message) and finish == "tool_calls"
    # markers that are special tokens in some tokenizers must reach the parser
    assert engine.requests[0][2].skip_special_tokens is False


def test_tools_go_into_the_template_and_past_calls_render():
    client, engine = _client("Sunny.")
    conversation = [*ASK["messages"],
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "22 C"}]
    with client:
        body = client.post("/v1/chat/completions", json={**ASK, "messages": conversation}).json()
        assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "Sunny."},
                                      "logprobs": None, "finish_reason": "stop", "stop_reason": None}
        prompt = engine.requests[0][1]["prompt"]
        assert 'Tools: get_weather{"type": "object"' in prompt and " get_time" in prompt
        # the arguments reach the template as an object, as HF templates expect
        assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
        assert "22 C (call_1)" in prompt
        tokenized = client.post("/tokenize", json={"messages": conversation, "tools": TOOLS}).json()
        assert tokenized["count"] == len(engine.tokenizer(prompt, add_special_tokens=False).input_ids)


def test_none_leaves_the_output_as_content():
    client, _ = _client(REPLIES["hermes"])
    with client:
        choice = client.post("/v1/chat/completions", json={**ASK, "tool_choice": "none"}).json()["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": REPLIES["hermes"]}
        assert choice["finish_reason"] == "stop"


def test_no_call_in_the_output_is_a_plain_answer():
    client, _ = _client("It is sunny in Paris.")
    with client:
        choice = client.post("/v1/chat/completions", json=ASK).json()["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": "It is sunny in Paris."}
        assert choice["finish_reason"] == "stop"
        assert _stream(client, ASK) == ({"role": "assistant", "content": "It is sunny in Paris."}, "stop")


@pytest.mark.parametrize("parallel", [True, False])
def test_required_is_a_grammar_over_the_tools(parallel):
    reply = '[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "get_time", "parameters": {}}]'
    client, engine = _client(reply, parser=None)  # no parser needed
    body = {**ASK, "tool_choice": "required", "parallel_tool_calls": parallel}
    with client:
        choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
        assert _calls(choice["message"]) == (CALLS if parallel else CALLS[:1])
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        streamed, finish = _stream(client, body)
        assert _without_ids(streamed) == _without_ids(choice["message"]) and finish == "tool_calls"
    tools = [FunctionTool("get_weather", WEATHER["function"]["parameters"]), FunctionTool("get_time")]
    assert engine.requests[0][2].structured_outputs.json == required_schema(tools, parallel)


def test_a_named_function_is_a_grammar_over_its_arguments():
    client, engine = _client('{"city": "Paris"}', parser=None)
    body = {**ASK, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    with client:
        choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
        assert _calls(choice["message"]) == CALLS[:1] and choice["finish_reason"] == "tool_calls"
        streamed, _ = _stream(client, body)
        assert _without_ids(streamed) == _without_ids(choice["message"])
    assert engine.requests[0][2].structured_outputs.json == WEATHER["function"]["parameters"]


def test_reasoning_then_tool_calls():
    client, _ = _client("<think>Two tools.</think>\n" + REPLIES["hermes"].split("\n", 1)[1], reasoning="qwen3")
    with client:
        message = client.post("/v1/chat/completions", json=ASK).json()["choices"][0]["message"]
        assert message["reasoning_content"] == "Two tools." and message["content"] is None
        assert _calls(message) == CALLS
        streamed, _ = _stream(client, ASK)
        assert _without_ids(streamed) == _without_ids(message)


def test_a_call_cut_by_max_tokens_finishes_with_length():
    client, _ = _client(REPLIES["hermes"])
    with client:
        choice = client.post("/v1/chat/completions", json={**ASK, "max_tokens": 70}).json()["choices"][0]
        assert choice["finish_reason"] == "length"
        [(name, arguments)] = _calls(choice["message"])
        assert name == "get_weather" and arguments == '{"city":'  # what was written of them


@pytest.mark.parametrize("body,param,message", [
    (ASK, "tool_choice", '"auto" tool choice needs a server started with --enable-auto-tool-choice'),
    ({**ASK, "tools": None, "tool_choice": "required"}, "tool_choice", "tool_choice 'required' needs tools"),
    ({**ASK, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "names the function 'nope', which is not among the tools"),
    ({**ASK, "tool_choice": "none", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]}, "tools",
     "tools[0].function.parameters: invalid or unsupported JSON schema"),
    ({**ASK, "tool_choice": "none", "tools": [TIME, TIME]}, "tools", "the function name 'get_time' is given twice"),
    ({**ASK, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice",
     "Only one structured output constraint"),
    ({**ASK, "tool_choice": "none", "tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools",
     None),
    ({"messages": [{"role": "tool", "content": "22 C"}]}, "messages", "needs the tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages",
     "only an assistant message has tool_calls"),
])
def test_bad_tool_requests_are_400_before_any_work(body, param, message):
    client, engine = _client("unused", parser=None)
    with client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and (message is None or message in error["message"]), error
    assert not engine.started


def test_auto_tool_choice_needs_a_parser():
    with pytest.raises(ValueError, match="--enable-auto-tool-choice needs --tool-call-parser"):
        ServerSettings(enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="supported: hermes, llama3_json, mistral, pythonic"):
        ServerSettings(tool_call_parser="nope")
