"""The L2 prefetch of the next GEMM's weight (kernels/triton/l2_prefetch.py) is a hint only: the
kernels that issue it write exactly what they write without it, and the engine plans it onto
the right weights."""
from __future__ import annotations

import pytest
import torch

from pagedllm import LLM, SamplingParams
from pagedllm.kernels.triton.activation import silu_and_mul
from pagedllm.kernels.triton.l2_prefetch import MAX_ROWS, l2_prefetch_of, prefetch_budget
from pagedllm.kernels.triton.rms_norm import rms_norm
from tests.gpu.test_tiny_archs_gpu import make_llm, prompts

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
pytestmark = pytest.mark.skipif(not HOPPER, reason="bulk L2 prefetch needs sm_90 or later")


def test_budget_is_on_by_default_on_hopper():
    assert prefetch_budget() is not None


@pytest.mark.parametrize("rows", [1, 7, MAX_ROWS])
@pytest.mark.parametrize("mib", [0.01, 3.0, 64.0])  # a partial chunk; whole chunks; more than the weight
def test_kernels_write_the_same_with_a_prefetch(rows, mib):
    gen = torch.Generator(device="cuda").manual_seed(rows)
    weight = torch.randn(4096, 2048, device="cuda", dtype=torch.bfloat16, generator=gen)  # 16 MiB to fetch
    prefetch = l2_prefetch_of(weight, mib)
    assert prefetch is not None and prefetch.num_bytes == min(16 << 20, int(mib * (1 << 20))) // 16 * 16
    x = torch.randn(rows, 4096, device="cuda", dtype=torch.bfloat16, generator=gen)
    residual = torch.randn(rows, 4096, device="cuda", dtype=torch.bfloat16, generator=gen)
    norm_w = torch.rand(4096, device="cuda", dtype=torch.bfloat16, generator=gen)
    for want, got in zip(rms_norm(x, norm_w, 1e-5, residual), rms_norm(x, norm_w, 1e-5, residual, prefetch)):
        assert torch.equal(want, got)
    gate_up = torch.randn(rows, 2 * 14336, device="cuda", dtype=torch.bfloat16, generator=gen)
    assert torch.equal(silu_and_mul(gate_up), silu_and_mul(gate_up, prefetch))


def _planned(llm: LLM) -> list[tuple[object, torch.Tensor]]:
    model = llm.llm_engine.executor.worker.model
    pairs = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        pairs += [(layer.input_layernorm, attn.qkv_proj.weight_t), (attn.attn, attn.o_proj.weight_t),
                  (layer.post_attention_layernorm, mlp.gate_up_proj.weight_t), (mlp.act, mlp.down_proj.weight_t)]
    return pairs + [(model.model.norm, model.lm_head.weight_t)]


def test_engine_plans_each_gemm_and_generates_the_same_without_it(tiny_gpu_model):
    """Eager steps, so clearing the plan takes effect; the same tokens and logprobs bit for bit."""
    llm = make_llm(tiny_gpu_model("llama").folder, "bfloat16", enforce_eager=True)
    pairs = _planned(llm)
    for module, weight in pairs:
        assert module.l2_prefetch is not None and module.l2_prefetch.address == weight.data_ptr()
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=3)
    ids = [{"prompt_token_ids": p} for p in prompts(3)]
    with_prefetch = llm.generate(ids, params, use_tqdm=False)
    for module, _ in pairs:
        module.l2_prefetch = None
    without = llm.generate(ids, params, use_tqdm=False)
    for a, b in zip(with_prefetch, without):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert a.outputs[0].logprobs == b.outputs[0].logprobs
