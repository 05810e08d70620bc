"""HF transformers on the GPU as the oracle: greedy tokens, and their top-k logprobs per step."""
from __future__ import annotations

import torch


@torch.inference_mode()
def hf_greedy_with_logprobs(model, prompt_ids: list[int], max_new_tokens: int, k: int = 5,
                            eos_ids: set[int] | None = None) -> tuple[list[int], list[dict[int, float]]]:
    """Greedy tokens by HF generate (no padding) and, per generated position, {token: logprob}
    of the top k of the raw logits."""
    ids = torch.tensor([prompt_ids], device="cuda")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0, eos_token_id=sorted(eos_ids) if eos_ids else None,
                         output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt_ids):].tolist()
    tops = []
    for logits in out.logits:
        top = logits[0].float().log_softmax(-1).topk(k)
        tops.append(dict(zip(top.indices.tolist(), top.values.tolist())))
    return tokens, tops


def check_logprobs_close(ours: list[int], our_tops: list[dict[int, float]], ref: list[int],
                         ref_tops: list[dict[int, float]]) -> int:
    """vLLM's criterion for lower precisions: the sequences agree up to their first difference,
    where each side's token must be in the other's top-k; nothing is compared after it. Returns
    the index of that difference (len when none)."""
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            assert a in ref_tops[i], f"position {i}: our {a} not in HF's top-k {ref_tops[i]}"
            assert b in our_tops[i], f"position {i}: HF's {b} not in our top-k {our_tops[i]}"
            return i
    assert len(ours) == len(ref), (ours, ref)
    return len(ours)
