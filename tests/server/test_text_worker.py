"""The text worker gives what the HF tokenizer gives, inline or in its threads, and counts what it won't list."""
from __future__ import annotations

import asyncio
import copy

import pytest

from pagedllm.server.text_worker import INLINE_MAX, TextWorker
from tests.helpers.fake_engine import FILLER_WORDS, make_tokenizer, make_word_tokenizer

TEXTS = ["Hello wörld — 東京 🚀", "<|im_start|>user\nHi<|im_end|>", " ".join(FILLER_WORDS) * 3,
         "é" * (INLINE_MAX + 1), ("x <|im_end|> " + " ".join(FILLER_WORDS)) * 400]


@pytest.fixture(scope="module", params=["bytes", "words"])
def tokenizer(request):
    return make_tokenizer() if request.param == "bytes" else make_word_tokenizer()


def _run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_the_hf_tokenizer(tokenizer, add_special_tokens):
    worker = TextWorker(tokenizer)
    for text in TEXTS:
        expected = tokenizer(text, add_special_tokens=add_special_tokens).input_ids
        encoded = _run(worker.encode(text, add_special_tokens))
        assert encoded.token_ids == expected and encoded.num_tokens == len(expected)
    worker.shutdown()


def test_a_text_past_the_limit_is_counted_not_listed(tokenizer):
    worker = TextWorker(tokenizer)
    text = TEXTS[-1]
    num_tokens = len(tokenizer(text).input_ids)
    assert _run(worker.encode(text, True, max_tokens=num_tokens)).token_ids is not None
    encoded = _run(worker.encode(text, True, max_tokens=num_tokens - 1))
    assert encoded.token_ids is None and encoded.num_tokens == num_tokens
    worker.shutdown()


def test_chat_and_decode_match_the_hf_tokenizer(tokenizer):
    worker = TextWorker(tokenizer)
    conversation = [{"role": "user", "content": TEXTS[-1]}, {"role": "assistant", "content": "ok"}]
    text, encoded = _run(worker.encode_chat(conversation, True, False))
    assert text == tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert encoded.token_ids == tokenizer(text, add_special_tokens=False).input_ids
    ids = tokenizer(TEXTS[-1]).input_ids * 3
    assert len(ids) > INLINE_MAX and _run(worker.decode(ids)) == tokenizer.decode(ids)
    worker.shutdown()


def test_a_tokenizer_with_truncation_configured_goes_through_the_hf_call(tokenizer):
    truncating = copy.deepcopy(tokenizer)
    truncating.backend_tokenizer.enable_truncation(8)  # HF's __call__ turns it off; the Rust encoder would not
    worker = TextWorker(truncating)
    text = TEXTS[-1]
    assert _run(worker.encode(text, True)).token_ids == tokenizer(text).input_ids
    worker.shutdown()
