"""Killing the engine-core process: in-flight requests fail fast, /health turns 503, the server exits 1.
The same server (one running sequence at most, no waiting allowed beyond one) also sheds load with 503."""
from __future__ import annotations

import os
import signal
import threading
import time

import httpx2 as httpx
import pytest

from tests.helpers.server_process import ServerProcess

GRACE_S = 8.0


@pytest.fixture
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    args = [smollm2_gguf, "--tokenizer", smollm2_tokenizer_dir, "--dtype", "float32", "--max-model-len", "2048",
            "--kv-cache-memory", str(64 << 20), "--engine-death-grace", str(GRACE_S), "--api-key", "k",
            "--max-num-seqs", "1", "--max-waiting-requests", "1"]
    with ServerProcess(args) as s:
        yield s


def test_engine_death_fails_requests_and_health(server: ServerProcess) -> None:
    headers = {"Authorization": "Bearer k"}
    body = {"model": "x", "prompt": "Tell me a long story.", "max_tokens": 1500, "ignore_eos": True}
    models = httpx.get(server.base_url + "/v1/models", headers=headers).json()
    body["model"] = models["data"][0]["id"]
    results: dict[str, object] = {}

    def non_streaming() -> None:
        try:
            r = httpx.post(server.base_url + "/v1/completions", json=body, headers=headers, timeout=60)
            results["plain"] = r.status_code
        except httpx.HTTPError as e:
            results["plain"] = e
        results["plain_done"] = time.monotonic()

    thread = threading.Thread(target=non_streaming)
    with httpx.stream("POST", server.base_url + "/v1/completions", json={**body, "stream": True},
                      headers=headers, timeout=60) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # generation is under way
        thread.start()  # a second request: it waits, since only one sequence may run
        _wait_for_metric(server, headers, "pagedllm:num_requests_waiting", 1.0)
        shed = httpx.post(server.base_url + "/v1/completions", json=body, headers=headers)
        assert shed.status_code == 503 and shed.json()["error"]["message"]  # over --max-waiting-requests
        killed_at = time.monotonic()
        os.kill(server.engine_core_pid(), signal.SIGKILL)
        rest = list(lines)  # must end, not hang
    stream_ended = time.monotonic()
    thread.join(30)
    assert stream_ended - killed_at < 3.0
    assert any("error" in line for line in rest)
    assert results["plain"] == 503 or isinstance(results["plain"], httpx.HTTPError)
    assert results["plain_done"] - killed_at < 3.0  # type: ignore[operator]

    health = httpx.get(server.base_url + "/health")
    assert health.status_code == 503
    refused = httpx.post(server.base_url + "/v1/completions", json=body, headers=headers)
    assert refused.status_code == 503 and refused.json()["error"]["message"]

    assert server.proc is not None
    assert server.proc.wait(GRACE_S + 15) == 1  # exits non-zero after the grace period


def _wait_for_metric(server: ServerProcess, headers: dict[str, str], name: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while server.metrics(headers).get(name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.1)


def test_engine_restart_on_death(smollm2_gguf: str, smollm2_tokenizer_dir: str) -> None:
    args = [smollm2_gguf, "--tokenizer", smollm2_tokenizer_dir, "--dtype", "float32", "--max-model-len", "2048",
            "--kv-cache-memory", str(64 << 20), "--restart-engine-on-death", "--served-model-name", "m"]
    body = {"model": "m", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    with ServerProcess(args) as server:
        try:
            _kill_and_wait_for_restart(server, body)
        except Exception as e:
            raise AssertionError(f"server log:\n{server.log()}") from e


def _kill_and_wait_for_restart(server: ServerProcess, body: dict) -> None:
    url = server.base_url + "/v1/completions"
    before = httpx.post(url, json=body, timeout=60).json()["choices"][0]["text"]
    old_pid = server.engine_core_pid()
    os.kill(old_pid, signal.SIGKILL)
    time.sleep(0.5)
    assert httpx.get(server.base_url + "/health").status_code == 503
    deadline = time.monotonic() + 120
    while httpx.get(server.base_url + "/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert server.engine_core_pid() != old_pid
    after = httpx.post(url, json=body, timeout=60).json()["choices"][0]["text"]
    assert after == before
    assert server.proc is not None and server.proc.poll() is None
