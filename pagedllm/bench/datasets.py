"""Random-token requests for the serving benchmark, by vLLM's "random" dataset method.

Prompts are uniformly random token ids (special tokens excluded). By default they are sent as
token-id lists, so the server sees exactly the input length asked for; with the "text" format they
are decoded to text, and because decode -> encode is not the identity for random ids, the text is
nudged (truncated or padded with more random ids) until it re-encodes to the target length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PROMPT_FORMATS = ("token-ids", "text")
Seed = int | tuple[int, ...]  # what np.random.default_rng takes: a tuple seeds an independent stream
_MAX_TEXT_FIX_ROUNDS = 10


@dataclass(frozen=True)
class SampleRequest:
    prompt: list[int] | str  # token ids, or text for the "text" format
    prompt_len: int  # tokens the prompt encodes to (exact for token ids)
    output_len: int  # max_tokens; the server is asked to ignore EOS, so this many come back


def length_range(length: int, range_ratio: float) -> tuple[int, int]:
    """Inclusive [low, high] of lengths drawn around `length`, as vLLM's --random-range-ratio."""
    if length < 1:
        raise ValueError(f"lengths must be >= 1, got {length}")
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"--random-range-ratio must be in [0, 1), got {range_ratio}")
    low = max(1, math.floor(length * (1.0 - range_ratio)))
    return low, math.ceil(length * (1.0 + range_ratio))


def allowed_token_ids(vocab_size: int, special_ids: list[int] | None = None) -> np.ndarray:
    """Token ids a random prompt may use: the vocabulary minus special tokens (BOS/EOS/pad inside a
    prompt would change what the model does, not just how long the prompt is)."""
    special = set(special_ids or [])
    ids = np.array([t for t in range(vocab_size) if t not in special], dtype=np.int64)
    if ids.size == 0:
        raise ValueError("no non-special token ids to draw prompts from")
    return ids


def text_of_length(tokenizer: Any, token_ids: list[int], target_len: int, allowed: np.ndarray,
                   rng: np.random.Generator) -> tuple[str, int]:
    """Decode `token_ids` to text that re-encodes to `target_len` tokens (or as close as a few
    rounds get); returns the text and its real token count."""
    ids = list(token_ids)
    text, num_tokens = "", 0
    for _ in range(_MAX_TEXT_FIX_ROUNDS):
        text = tokenizer.decode(ids)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        num_tokens = len(ids)
        if num_tokens == target_len:
            break
        if num_tokens > target_len:
            ids = ids[:target_len]
        else:
            ids += rng.choice(allowed, size=target_len - num_tokens).tolist()
    return text, num_tokens


def sample_random_requests(
    num_prompts: int,
    input_len: int,
    output_len: int,
    *,
    seed: Seed,
    vocab_size: int,
    special_ids: list[int] | None = None,
    range_ratio: float = 0.0,
    prompt_format: str = "token-ids",
    tokenizer: Any = None,
) -> list[SampleRequest]:
    """`num_prompts` requests with input/output lengths uniform in their ranges; same seed, same
    requests."""
    if num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {num_prompts}")
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    if prompt_format == "text" and tokenizer is None:
        raise ValueError("the text prompt format needs a tokenizer (--tokenizer)")
    rng = np.random.default_rng(seed)
    allowed = allowed_token_ids(vocab_size, special_ids)
    in_low, in_high = length_range(input_len, range_ratio)
    out_low, out_high = length_range(output_len, range_ratio)
    input_lens = rng.integers(in_low, in_high + 1, size=num_prompts)
    output_lens = rng.integers(out_low, out_high + 1, size=num_prompts)
    requests = []
    for n_in, n_out in zip(input_lens.tolist(), output_lens.tolist()):
        ids = rng.choice(allowed, size=n_in).tolist()
        if prompt_format == "text":
            text, n_in = text_of_length(tokenizer, ids, n_in, allowed, rng)
            requests.append(SampleRequest(text, n_in, n_out))
        else:
            requests.append(SampleRequest(ids, n_in, n_out))
    return requests
