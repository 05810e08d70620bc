"""The real server (engine core in its own process) under the official openai client.

One server over the embedded SmolLM2 serves the whole module; outputs are checked against the
offline LLM over the same weights (greedy equality) and against themselves (stream vs not, seeds).
"""
from __future__ import annotations

import asyncio
import json

import httpx2 as httpx
import openai
import pytest

from pagedllm import LLM
from tests.helpers.server_checks import (MODEL, PROMPTS, check_greedy_completions_equal_offline_llm,
                                         check_n2_stream_matches_non_stream,
                                         check_random_disconnects_free_every_block, check_stop_string)
from tests.helpers.server_process import ServerProcess


@pytest.fixture(scope="module")
def async_client(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_greedy_completions_equal_offline_llm(client: openai.OpenAI, smollm2_quantized_llm: LLM) -> None:
    check_greedy_completions_equal_offline_llm(client, smollm2_quantized_llm)  # the server's default: quantized


def _tokenize(server: ServerProcess, text: str, add_special_tokens: bool = True) -> dict:
    return httpx.post(server.base_url + "/tokenize", json={"model": MODEL, "prompt": text,
                                                          "add_special_tokens": add_special_tokens}).json()


def test_usage_and_length(server: ServerProcess, client: openai.OpenAI) -> None:
    prompt_ids = _tokenize(server, PROMPTS[0])
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=7, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == prompt_ids["count"]
    assert resp.usage.completion_tokens == 7
    assert resp.usage.total_tokens == prompt_ids["count"] + 7


def test_stream_equals_non_stream_with_seed(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, max_tokens=24, temperature=0.9, seed=1234,
                  messages=[{"role": "user", "content": "Write a haiku about the sea."}])
    full = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert full.choices[0].message.content == again.choices[0].message.content  # seed reproduces
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_n2_stream_matches_non_stream(client: openai.OpenAI) -> None:
    check_n2_stream_matches_non_stream(client)


def test_logprobs(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=5, temperature=0, logprobs=3)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and 3 <= len(top) <= 4
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)  # greedy: chosen is the best
        assert token in top
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi!"}],
                                          max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content)


def test_stop_string(client: openai.OpenAI) -> None:
    check_stop_string(client)


def test_tokenize_detokenize_round_trip(server: ServerProcess) -> None:
    text = "Hello wörld — 東京 🚀"
    tokens = _tokenize(server, text, add_special_tokens=False)["tokens"]
    back = httpx.post(server.base_url + "/detokenize", json={"model": MODEL, "tokens": tokens}).json()
    assert back["prompt"] == text


def test_errors_with_real_engine(server: ServerProcess) -> None:
    url = server.base_url + "/v1/completions"
    too_long = httpx.post(url, json={"model": MODEL, "prompt": [1] * 3000, "max_tokens": 4})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    unknown = httpx.post(url, json={"model": "nope", "prompt": "hi"})
    assert unknown.status_code == 404 and unknown.json()["error"]["message"]
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    bad_type = httpx.post(url, json={"model": MODEL, "prompt": "hi", "max_tokens": "many"})
    assert bad_type.status_code == 400
    out_of_vocab = httpx.post(url, json={"model": MODEL, "prompt": [10**9], "max_tokens": 2})
    assert out_of_vocab.status_code == 400
    # the engine kept serving
    ok = httpx.post(url, json={"model": MODEL, "prompt": "hi", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200


def test_64_concurrent_streams(async_client: openai.AsyncOpenAI, client: openai.OpenAI) -> None:
    prompts = [f"Count from {i} upward:" for i in range(64)]
    expected = {p: client.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0,
                                             extra_body={"ignore_eos": True}).choices[0].text
                for p in prompts[:4]}

    async def one(prompt: str) -> tuple[str, int, str]:
        stream = await async_client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage, reason = "", 0, ""
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.text
                reason = choice.finish_reason or reason
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        return text, usage, reason

    async def run_all() -> list[tuple[str, int, str]]:
        return await asyncio.gather(*(one(p) for p in prompts))

    results = asyncio.run(run_all())
    assert all(usage == 12 and reason == "length" for _, usage, reason in results)
    for prompt, (text, _, _) in zip(prompts, results):
        if prompt in expected:  # batched with 63 others, greedy text is still the same
            assert text == expected[prompt]


def test_random_disconnects_free_every_block(server: ServerProcess) -> None:
    check_random_disconnects_free_every_block(server)


def test_metrics_count_tokens(server: ServerProcess, client: openai.OpenAI) -> None:
    before = server.metrics()
    client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=5, temperature=0,
                              extra_body={"ignore_eos": True})
    after = server.metrics()
    assert after["pagedllm:generation_tokens_total"] - before["pagedllm:generation_tokens_total"] == 5
    assert after["pagedllm:time_to_first_token_seconds_count"] > before["pagedllm:time_to_first_token_seconds_count"]
    assert json.dumps(after)  # plain numbers
