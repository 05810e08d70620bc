"""SmolLM2-135M through the whole engine equals HF transformers (greedy tokens, prompt logprobs)."""
from __future__ import annotations

import pytest

from pagedllm import SamplingParams
from tests.helpers.hf_oracle import hf_greedy, hf_prompt_logprobs

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 4, 5,",
    "The quick brown fox",
    "Translate to French: Good morning, how are you?",
    "import numpy as np\n\n# compute the mean of an array\n",
    "Water boils at a temperature of",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a fact about the moon."}],
]
MAX_TOKENS = 24


def _long_prompt(tokenizer) -> list[int]:
    text = " ".join(f"Item {i}: the {['red', 'green', 'blue'][i % 3]} box holds {i * 7 % 13} stones." for i in range(120))
    ids = tokenizer(text).input_ids
    assert len(ids) > 1000
    return ids[:1100]


@pytest.fixture(scope="module")
def prompt_ids(smollm2_llm) -> list[list[int]]:
    tok = smollm2_llm.get_tokenizer()
    ids = [tok(p).input_ids for p in PROMPTS]
    for chat in CHATS:
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids.append(tok(text, add_special_tokens=False).input_ids)
    ids.append(_long_prompt(tok))
    return ids


def test_greedy_tokens_equal_hf(smollm2_llm, hf_smollm2_model, prompt_ids):
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    outputs = smollm2_llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
    assert len(outputs) >= 12
    for ids, out in zip(prompt_ids, outputs):
        expected = hf_greedy(hf_smollm2_model, ids, MAX_TOKENS)
        assert out.outputs[0].token_ids == expected, f"prompt of {len(ids)} tokens diverged"


def test_chat_api_matches_hf(smollm2_llm, hf_smollm2_model):
    tok = smollm2_llm.get_tokenizer()
    out = smollm2_llm.chat(CHATS[0], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), use_tqdm=False)[0]
    ids = tok(tok.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True),
              add_special_tokens=False).input_ids
    assert out.prompt_token_ids == ids
    assert out.outputs[0].token_ids == hf_greedy(hf_smollm2_model, ids, MAX_TOKENS)
    assert out.outputs[0].text == tok.decode(out.outputs[0].token_ids, skip_special_tokens=True)


def test_prompt_logprobs_close_to_hf(smollm2_llm, hf_smollm2_model, prompt_ids):
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=2)
    chosen = [prompt_ids[0], prompt_ids[8], prompt_ids[-1]]
    outputs = smollm2_llm.generate([{"prompt_token_ids": p} for p in chosen], params, use_tqdm=False)
    for ids, out in zip(chosen, outputs):
        ours = out.prompt_logprobs
        assert ours is not None and len(ours) == len(ids) and ours[0] is None
        expected = hf_prompt_logprobs(hf_smollm2_model, ids)
        got = [ours[i][ids[i]].logprob for i in range(1, len(ids))]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-3
        for i in range(1, len(ids)):
            entry = ours[i]
            assert len(entry) <= 3 and entry[ids[i]].rank >= 1
