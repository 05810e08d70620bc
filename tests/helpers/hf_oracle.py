"""Greedy generation and prompt logprobs from HF transformers: the oracle nobody here wrote."""
from __future__ import annotations

import torch


@torch.inference_mode()
def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_ids: set[int] | None = None) -> list[int]:
    """Greedy tokens by HF generate (one prompt, no padding); stops at eos like our engine does."""
    ids = torch.tensor([prompt_ids])
    kwargs = {}
    if eos_ids is not None:
        kwargs["eos_token_id"] = sorted(eos_ids) if eos_ids else None
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=0, **kwargs)
    return out[0, len(prompt_ids):].tolist()


@torch.inference_mode()
def hf_prompt_logprobs(model, prompt_ids: list[int]) -> list[float]:
    """log p(prompt[i] | prompt[:i]) for i >= 1."""
    logits = model(torch.tensor([prompt_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs[:-1].gather(1, torch.tensor(prompt_ids[1:])[:, None])[:, 0].tolist()
