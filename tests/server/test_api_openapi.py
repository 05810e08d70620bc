"""The OpenAPI document says what the server does: schemathesis, over every operation, with its
default checks (status codes, content types and bodies as documented, schema-valid requests
accepted and schema-violating ones refused, no 5xx), against the app over the fake engine."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine

AUTH = {"Authorization": "Bearer sk-test"}
MAX_EXAMPLES = 40  # per operation and phase: seconds in all, with a fixed seed (derandomize)


def _inexpressible(context, failure, case, response) -> bool:
    """Keep every failure but a schema-valid request refused by one of the rules JSON schema cannot
    state, which the OpenAPI document states in words: the prompt plus max_tokens must fit the
    context (context_length_exceeded), min_tokens may not pass max_tokens, and a request has at most
    one structured output constraint, itself valid, with no min_tokens beside it."""
    if failure.code != "ST202" or response.status_code != 400:
        return True
    error = response.json()["error"]
    return not (error["code"] == "context_length_exceeded" or error["message"].startswith(_INEXPRESSIBLE))


# Rules the document states in words: min_tokens up to max_tokens, one structured output
# constraint a request whose schema / regex / grammar is itself valid, tools whose parameters are
# valid schemas and whose names differ, a tool_choice naming one of them, "auto" (the default with
# tools) only on a server started with --enable-auto-tool-choice.
_INEXPRESSIBLE = ("min_tokens must be", "min_tokens cannot be combined with structured_outputs", "structured_outputs",
                  "Only one structured output constraint", "response_format of type json_schema needs", "tools[",
                  "tool_choice ", '"auto" tool choice')


@pytest.fixture(scope="module")
def api_schema(tokenizer):
    app = build_app(FakeEngine(tokenizer=tokenizer, max_model_len=1 << 16), ServerSettings(api_key="sk-test"))
    config = SchemathesisConfig.from_dict({"output": {"sanitization": {"enabled": False}}})
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, config=config, headers=AUTH)
    loaded.hook("filter_failure")(_inexpressible)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_documented_contract(case):
    case.call_and_validate(headers=AUTH)


def test_the_document_names_the_errors_and_the_runtime_bounds(engine: FakeEngine):
    from fastapi.testclient import TestClient

    def document(settings: ServerSettings) -> dict:
        with TestClient(build_app(engine, settings)) as client:
            return client.get("/openapi.json", headers=AUTH).json()

    doc = document(ServerSettings())
    completions = doc["paths"]["/v1/completions"]["post"]["responses"]
    assert {"400", "404", "408", "413", "503"} <= set(completions) and "422" not in completions
    assert "401" not in completions  # no API key: never sent
    assert completions["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert set(completions["200"]["content"]) == {"application/json", "text/event-stream"}
    assert not any("422" in op["responses"] for ops in doc["paths"].values() for op in ops.values())
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    request = doc["components"]["schemas"]["CompletionRequest"]
    ids = request["properties"]["stop_token_ids"]["anyOf"][0]["items"]
    assert (ids["minimum"], ids["maximum"]) == (0, len(engine.tokenizer) - 1)
    assert request["properties"]["max_tokens"]["anyOf"][0]["maximum"] == engine.max_model_len - 1
    assert request["properties"]["logits_processors"]["description"].startswith("Not supported yet")

    keyed = document(ServerSettings(api_key="sk-test"))
    assert "401" in keyed["paths"]["/v1/models"]["get"]["responses"]
    assert "401" not in keyed["paths"]["/health"]["get"]["responses"]
