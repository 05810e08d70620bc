"""The API key check: RFC 7235 rules for the Bearer scheme, and a 401 that says how to authenticate."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine

API_KEY = "sk-test-key"


@pytest.fixture
def keyed(engine: FakeEngine):
    with TestClient(build_app(engine, ServerSettings(api_key=API_KEY)), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(keyed: TestClient, scheme: str):
    assert keyed.get("/v1/models", headers={"Authorization": f"{scheme} {API_KEY}"}).status_code == 200


@pytest.mark.parametrize("value", [f"Bearer {API_KEY.upper()}", f"Basic {API_KEY}", f"Bearer  {API_KEY}x", "Bearer",
                                   f"Bearer{API_KEY}", ""])
def test_the_key_itself_is_exact(keyed: TestClient, value: str):
    response = keyed.get("/v1/models", headers={"Authorization": value})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_two_authorization_headers_are_a_401(keyed: TestClient):
    good = ("Authorization", f"Bearer {API_KEY}")
    for headers in ([good, good], [good, ("Authorization", "Bearer wrong")], [("Authorization", "Bearer x"), good]):
        response = keyed.get("/v1/models", headers=headers)
        assert response.status_code == 401, headers
        assert "one Authorization header" in response.json()["error"]["message"]


def test_401_says_how_to_authenticate(keyed: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = keyed.post("/v1/completions", json={"prompt": "Hi"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
