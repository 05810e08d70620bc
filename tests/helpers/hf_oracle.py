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


def check_greedy_and_prompt_logprobs(llm, hf_model, prompts: list[list[int]], max_tokens: int, eos_ids: set[int],
                                     tol: float = 1e-3) -> None:
    """The engine's greedy tokens equal HF's, and its prompt logprobs are within `tol` of HF's."""
    from pagedllm import SamplingParams

    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=max_tokens, prompt_logprobs=1), use_tqdm=False)
    for ids, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(hf_model, ids, max_tokens, eos_ids)
        expected = hf_prompt_logprobs(hf_model, ids)
        got = [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= tol
