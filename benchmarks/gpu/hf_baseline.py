"""HF transformers `generate()` on the same model shape with random bf16 weights: tokens per
second at a few batch sizes (one batch each, so its share of the run stays bounded)."""
from __future__ import annotations

import gc
import time
from typing import Any

import torch


def hf_generate_throughput(folder: str, batch_sizes: list[int], input_len: int, output_len: int,
                           time_budget_s: float = 60.0) -> dict[int, float]:
    """Total (prompt + output) tokens/s of greedy `generate` per batch size; stops early when a
    larger batch is slower or the time budget is spent."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    results: dict[int, float] = {}
    spent = 0.0
    try:
        _generate(model, config.vocab_size, 2, 8, 4)  # warm-up: kernels, allocator
        for batch in batch_sizes:
            if spent > time_budget_s:
                break
            elapsed = _generate(model, config.vocab_size, batch, input_len, output_len)
            spent += elapsed
            results[batch] = batch * (input_len + output_len) / elapsed
            if len(results) > 1 and results[batch] < max(results.values()) * 0.98:
                break
    except torch.OutOfMemoryError:
        pass  # the previous batch size was HF's largest
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return results


@torch.inference_mode()
def _generate(model: Any, vocab_size: int, batch: int, input_len: int, output_len: int) -> float:
    ids = torch.randint(3, vocab_size, (batch, input_len), device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=output_len,
                         min_new_tokens=output_len, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == input_len + output_len
    return time.perf_counter() - start
