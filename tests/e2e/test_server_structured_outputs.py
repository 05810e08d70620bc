"""Structured outputs through the server with the official openai client: response_format
(json_schema, json_object; chat and completions), `parse` with a pydantic model, vLLM's
structured_outputs and guided_* extras, streaming, and 400s for bad constraints."""
from __future__ import annotations

import json
import os
import re

import jsonschema
import openai
import pydantic
import pytest


SCHEMAS = json.load(open(os.path.join(os.path.dirname(__file__), "..", "data", "json_schemas.json")))


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def _ask(client, model, text, **kwargs):
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 200)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


@pytest.mark.parametrize("index", [0, 4, 9, 14])
def test_json_schema_response_format(client, model, index):
    schema = SCHEMAS[index]
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    choice = _ask(client, model, f"Answer as JSON: {json.dumps(schema)}", response_format=fmt).choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_completions_take_response_format_too(client, model):
    schema = SCHEMAS[2]
    out = client.completions.create(model=model, prompt="A colour as JSON:", max_tokens=60, temperature=0.0,
                                    extra_body={"response_format": {"type": "json_schema",
                                                                    "json_schema": {"name": "c", "schema": schema}}})
    jsonschema.validate(json.loads(out.choices[0].text), schema)


class Film(pydantic.BaseModel):
    title: str = pydantic.Field(max_length=40)
    year: int = pydantic.Field(ge=1900, le=2100)


def test_parse_with_a_pydantic_model(client, model):
    completion = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Name a film and its year."}], response_format=Film,
        temperature=0.0, max_tokens=100)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Film) and 1900 <= parsed.year <= 2100


def test_json_object(client, model):
    content = _ask(client, model, "Give the capital of France as a JSON object with one key, capital.",
                   response_format={"type": "json_object"}).choices[0].message.content
    assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize("extra, check", [
    ({"structured_outputs": {"regex": r"[0-9]{3}-[a-z]{2}"}}, lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2}", t)),
    ({"structured_outputs": {"choice": ["red", "blue"]}}, lambda t: t in ("red", "blue")),
    ({"guided_choice": ["up", "down"]}, lambda t: t in ("up", "down")),
    ({"guided_regex": r"(yes|no)"}, lambda t: t in ("yes", "no")),
    ({"guided_json": SCHEMAS[5]}, lambda t: jsonschema.validate(json.loads(t), SCHEMAS[5]) is None),
], ids=["structured_outputs-regex", "structured_outputs-choice", "guided_choice", "guided_regex", "guided_json"])
def test_vllm_extras(client, model, extra, check):
    content = _ask(client, model, "Answer briefly.", extra_body=extra).choices[0].message.content
    assert check(content), content


def test_streamed_equals_non_streamed(client, model):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS[0]}}
    whole = _ask(client, model, "A person as JSON.", response_format=fmt).choices[0].message.content
    stream = _ask(client, model, "A person as JSON.", response_format=fmt, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == whole


@pytest.mark.parametrize("kwargs, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "invalid or unsupported JSON schema"),
    ({"extra_body": {"guided_regex": "(unclosed"}}, "invalid or unsupported regex"),
    ({"extra_body": {"guided_choice": ["a"], "guided_regex": "a"}}, "Only one structured output constraint"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema: Field required"),
])
def test_bad_constraints_are_400(client, model, kwargs, message):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(client, model, "hi", **kwargs)
    assert message in str(e.value)
