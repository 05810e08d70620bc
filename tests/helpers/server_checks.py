"""Checks of a served SmolLM2 (`ServerProcess`) shared by the end-to-end modules that start the server
in different modes: tests/e2e/test_server_openai.py runs every check, test_server_async_scheduling.py
those where overlapping steps could go wrong."""
from __future__ import annotations

import asyncio
import random
import time

import httpx2 as httpx
import openai

from pagedllm import LLM, SamplingParams
from tests.helpers.server_process import ServerProcess

MODEL = "smollm2"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was"]


def server_args(gguf: str, tokenizer_dir: str, *extra: str) -> list[str]:
    """`pagedllm serve` arguments: the GGUF in float32 with a small KV cache, plus `extra`."""
    return [gguf, "--tokenizer", tokenizer_dir, "--served-model-name", MODEL, "--dtype", "float32",
            "--max-model-len", "2048", "--kv-cache-memory", str(256 << 20), "--disable-log-stats", *extra]


def wait_idle(server: ServerProcess, timeout_s: float = 30.0) -> dict[str, float]:
    """Until no request runs or waits and no KV block is referenced (all free or cached)."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = server.metrics()
        idle = (m["pagedllm:num_requests_running"] == 0 and m["pagedllm:num_requests_waiting"] == 0
                and m["pagedllm:kv_cache_num_free_blocks"] == m["pagedllm:kv_cache_num_blocks"])
        if idle or time.monotonic() > deadline:
            return m
        time.sleep(0.2)


def check_greedy_completions_equal_offline_llm(client: openai.OpenAI, llm: LLM) -> None:
    """Greedy completions of a batch of prompts equal the offline LLM's over the same weights."""
    expected = [o.outputs[0].text for o in llm.generate(
        PROMPTS, SamplingParams(max_tokens=16, temperature=0), use_tqdm=False)]
    resp = client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=16, temperature=0)
    got = sorted(resp.choices, key=lambda c: c.index)
    assert [c.text for c in got] == expected


def check_n2_stream_matches_non_stream(client: openai.OpenAI) -> None:
    """n=2 with a seed: the streamed sequences equal the whole ones, and differ from each other."""
    # The two sequences have seeds 7 and 8 (seed + index), so they differ, and each reproduces.
    kwargs = dict(model=MODEL, prompt="My favourite food is", max_tokens=12, temperature=1.0, seed=7, n=2)
    full = client.completions.create(**kwargs)
    texts = {0: "", 1: ""}
    for chunk in client.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {c.index: c.text for c in full.choices}
    assert texts[0] != texts[1]
    lengths = sum(12 for c in full.choices if c.finish_reason == "length")
    assert full.usage.completion_tokens >= lengths and full.usage.completion_tokens <= 24


def check_stop_string(client: openai.OpenAI) -> None:
    """A stop string cuts the greedy text just before it, with finish_reason "stop"."""
    base = client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=30, temperature=0).choices[0].text
    words = base.split()
    assert len(words) > 4
    stop = " " + words[3]
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=30, temperature=0, stop=[stop])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].text == base[:base.index(stop)]


def check_random_disconnects_free_every_block(server: ServerProcess) -> None:
    """300 random requests, about half cut off by their client: afterwards nothing runs or waits
    and every KV block is free."""
    rng = random.Random(0)
    url = server.base_url + "/v1/completions"

    async def one(http: httpx.AsyncClient, i: int) -> str:
        body = {"model": MODEL, "prompt": [rng.randrange(100, 40000) for _ in range(rng.randrange(8, 200))],
                "max_tokens": rng.randrange(4, 40), "ignore_eos": True, "stream": rng.random() < 0.6}
        cut_after = rng.random() * 3.0 if rng.random() < 0.5 else None
        try:
            async with asyncio.timeout(cut_after) if cut_after is not None else _null():
                if body["stream"]:
                    async with http.stream("POST", url, json=body) as resp:
                        async for _ in resp.aiter_lines():
                            pass
                else:
                    await http.post(url, json=body)
            return "done"
        except TimeoutError:
            return "cut"

    async def run_all() -> list[str]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=400)) as http:
            return await asyncio.gather(*(one(http, i) for i in range(300)))

    before = wait_idle(server).get("pagedllm:request_success_total", 0.0)  # absent until a request ends
    outcomes = asyncio.run(run_all())
    assert 30 < outcomes.count("cut") < 270
    m = wait_idle(server)
    assert m["pagedllm:num_requests_running"] == 0 and m["pagedllm:num_requests_waiting"] == 0
    assert m["pagedllm:kv_cache_num_free_blocks"] == m["pagedllm:kv_cache_num_blocks"]
    assert m["pagedllm:kv_cache_usage_perc"] == 0
    # Every request that reached the engine is counted, aborted ones too; a client that hung up
    # while its request was still being tokenized or queued for the engine never reached it.
    assert outcomes.count("done") <= m["pagedllm:request_success_total"] - before <= 300


class _null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
