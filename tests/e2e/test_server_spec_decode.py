"""The server with --speculative-config: the same completions as the offline engine without
speculation (greedy, streamed n=2, stop strings), and vLLM's spec_decode_* counters on /metrics."""
from __future__ import annotations

import re

import httpx2 as httpx
import openai
import pytest

from pagedllm import LLM
from tests.helpers.server_checks import (check_greedy_completions_equal_offline_llm, check_n2_stream_matches_non_stream,
                                         check_stop_string, server_args)
from tests.helpers.server_process import ServerProcess

SPEC = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}'


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    with ServerProcess(server_args(smollm2_gguf, smollm2_tokenizer_dir, "--speculative-config", SPEC)) as s:
        yield s


def test_greedy_completions_equal_offline_llm(client: openai.OpenAI, smollm2_quantized_llm: LLM) -> None:
    check_greedy_completions_equal_offline_llm(client, smollm2_quantized_llm)


def test_n2_stream_matches_non_stream(client: openai.OpenAI) -> None:
    check_n2_stream_matches_non_stream(client)


def test_stop_string(client: openai.OpenAI) -> None:
    check_stop_string(client)


def test_metrics_count_drafts(client: openai.OpenAI, server: ServerProcess) -> None:
    text = "one two three four five six seven eight nine ten"
    client.completions.create(model=client.models.list().data[0].id, prompt=f"Repeat: {text}\nAgain: {text}\nAgain:",
                              max_tokens=32, temperature=0.0)
    body = httpx.get(server.base_url + "/metrics").text

    def value(name: str) -> float:
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+]+)$", body, re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        return float(match.group(1))

    drafts, draft_tokens = value("pagedllm:spec_decode_num_drafts_total"), value("pagedllm:spec_decode_num_draft_tokens_total")
    accepted = value("pagedllm:spec_decode_num_accepted_tokens_total")
    assert drafts > 0 and draft_tokens >= drafts and 0 < accepted <= draft_tokens
    assert 'pagedllm:spec_decode_num_accepted_tokens_per_pos_total{model_name=' in body
