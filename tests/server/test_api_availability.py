"""Huge prompts are tokenized off the event loop: the server keeps answering while it works on them.

The server runs in a process of its own (the client timing it must not share its GIL), over the
fake engine with a word-level tokenizer: ~6 bytes a token as real vocabularies give English, so a
10 MB prompt has real-world size (1.6M tokens) and takes seconds to tokenize.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx2 as httpx
import pytest

from tests.helpers.fake_engine import FILLER_WORDS
from tests.helpers.fake_server_process import FakeServerProcess

MAX_LATENCY_S = 0.1


@pytest.fixture(scope="module")
def server():
    with FakeServerProcess("--word-tokenizer") as s:
        yield s


def _filler(num_bytes: int) -> str:
    words = " ".join(FILLER_WORDS) + " "
    return (words * (num_bytes // len(words) + 1))[:num_bytes]


def _post_raw(port: int, path: str, raw: bytes) -> tuple[int, dict]:
    """POST over a plain socket: sending and receiving release the GIL, where an HTTP client's parsing of
    10 MB would hold this process's GIL, and the timing thread with it."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n").encode()
    chunks = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + raw)
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    status_line, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(status_line.split(b" ", 2)[1]), json.loads(body)


def test_health_and_small_requests_answer_within_100_ms_while_10_mb_prompts_are_tokenized(server):
    big = _filler(10 << 20)
    chat = [{"role": "user", "content": _filler(1 << 20)}]
    bodies = {"/tokenize": {"prompt": big}, "/v1/completions": {"prompt": big},
              "/v1/chat/completions": {"messages": chat}}
    raws = {path: json.dumps(body).encode() for path, body in bodies.items()}
    results: dict[str, tuple[int, dict]] = {}

    def post_each() -> None:  # one after the other: each request's work has a core, the loop the other
        for path, raw in raws.items():
            results[path] = _post_raw(server.port, path, raw)

    job = threading.Thread(target=post_each)
    latencies: list[float] = []
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        job.start()
        while job.is_alive():
            start = time.perf_counter()
            if len(latencies) % 10 == 9:  # now and then a small request through the tokenizer and the engine
                small = http.post("/v1/completions", json={"prompt": "lorem ipsum", "max_tokens": 2})
                assert small.status_code == 200, small.text
            else:
                assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.01)
    job.join()

    status, tokenized = results["/tokenize"]
    assert status == 200 and tokenized["count"] == len(big.split())
    for path in ("/v1/completions", "/v1/chat/completions"):  # counted, then refused for the context
        status, body = results[path]
        assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert len(latencies) >= 20, "the big requests ended before the server was timed"
    # All but 2% of the answers within 100 ms, and those within 300: on a loaded 2-core machine the OS
    # alone holds the server's thread back now and then. (Tokenized on the event loop, these prompts
    # stall it for 6-9 s.)
    slow = sorted(latency for latency in latencies if latency >= MAX_LATENCY_S)
    assert len(slow) <= max(1, len(latencies) // 50) and max(latencies) < 3 * MAX_LATENCY_S, (slow, len(latencies))
