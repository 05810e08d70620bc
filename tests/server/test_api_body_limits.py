"""Request bodies have a size limit (413) and a time limit (408), over real sockets on loopback."""
from __future__ import annotations

import json
import socket
import time

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from pagedllm.server.api_server import build_app
from pagedllm.server.settings import ServerSettings
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.live_server import LiveServer

MAX_BYTES = 4096
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def limited(tokenizer):
    settings = ServerSettings(max_request_body_bytes=MAX_BYTES, request_body_timeout_s=TIMEOUT_S, api_key="k")
    with LiveServer(build_app(FakeEngine(tokenizer=tokenizer), settings)) as server:
        yield server


def _raw_request(server: LiveServer, head: bytes, body: bytes, wait_s: float = 5.0) -> tuple[bytes, float, bool]:
    """Send `head` and `body`, then read until the server closes: (what came back, seconds, closed)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(wait_s)
        start = time.monotonic()
        sock.sendall(head + body)
        received, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        return received, time.monotonic() - start, closed


def _head(content_length: int, path: str = "/v1/completions") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n").encode()


def _error_of(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def test_a_body_that_never_completes_gets_a_408_and_the_connection_closes(limited: LiveServer):
    received, seconds, closed = _raw_request(limited, _head(100), b'{"prompt": "Hi"')  # 15 of 100 bytes
    status, error = _error_of(received)
    assert status == 408 and error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert closed and TIMEOUT_S <= seconds < TIMEOUT_S + 2


def test_an_announced_body_over_the_limit_gets_a_413_without_being_read(limited: LiveServer):
    received, seconds, closed = _raw_request(limited, _head(MAX_BYTES + 1), b"")  # nothing sent: nothing awaited
    status, error = _error_of(received)
    assert status == 413 and error["code"] == "request_too_large" and str(MAX_BYTES) in error["message"]
    assert closed and seconds < 2


def test_a_chunked_body_over_the_limit_gets_a_413(limited: LiveServer):
    def chunks():
        for _ in range(MAX_BYTES // 1000 + 1):
            yield b" " * 1000

    response = httpx.post(limited.base_url + "/v1/completions", content=chunks(), timeout=5,
                          headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_bodies_within_the_limits_pass(limited: LiveServer):
    body = json.dumps({"prompt": "Hi", "max_tokens": 3, "stop": ["x" * 100] * 30}).encode()
    assert len(body) < MAX_BYTES
    received, _, _ = _raw_request(limited, _head(len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                                  body)
    assert received.startswith(b"HTTP/1.1 200")
    with httpx.Client(base_url=limited.base_url, headers={"Authorization": "Bearer k"}, timeout=5) as http:
        for _ in range(3):  # keep-alive: each body read exactly, none taken for the next request
            assert http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
            assert http.get("/health").status_code == 200


def test_the_api_key_is_checked_before_the_body_is_read(limited: LiveServer):
    head = _head(MAX_BYTES * 10).replace(b"Authorization: Bearer k\r\n", b"")
    received, seconds, _ = _raw_request(limited, head, b"", wait_s=1)
    assert _error_of(received)[0] == 401 and seconds < 1


def test_default_limits_are_generous(engine: FakeEngine):
    settings = ServerSettings()
    assert settings.max_request_body_bytes == 32 << 20 and settings.request_body_timeout_s == 60.0
    with TestClient(build_app(engine, settings)) as client:  # an 8 MB body is read
        response = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "user": "x" * (8 << 20)})
        assert response.status_code == 200, response.text
