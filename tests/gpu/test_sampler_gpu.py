"""The sampler on the GPU: no host synchronisation until the sampled tokens are read, the same
processed logits and truncation as on the CPU, and per-request seeds reproducible in any batch."""
from __future__ import annotations

import pytest
import torch

from pagedllm.sample.sampler import Sampler, process_logits
from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
from pagedllm.sample.topk_topp import apply_min_p, apply_top_k, apply_top_p
from pagedllm.sampling_params import SamplingParams

V = 1000
CUDA = torch.device("cuda")


def _row(output: list[int] | None = None, **params) -> SamplingRequest:
    return SamplingRequest(SamplingParams(**params), [1, 2, 3, 4], list(output or [5, 6]), 2)


def _mixed_rows() -> list[SamplingRequest]:
    return [
        _row(temperature=0),
        _row(temperature=0.7, top_k=40, seed=3),
        _row(temperature=1.0, top_p=0.8),
        _row(temperature=1.2, min_p=0.05, repetition_penalty=1.2, frequency_penalty=0.3),
        _row(temperature=0.9, top_k=20, top_p=0.5, presence_penalty=0.4, logit_bias={7: 5.0}),
        _row(temperature=1.0, min_tokens=5, seed=11),
    ]


@pytest.fixture(params=["torch", "triton"])
def make_sampler(request: pytest.FixtureRequest):
    """Samplers with the torch stages (KernelConfig.triton_sampler off) and with the Triton
    inverse-CDF stage (the default, kernels/triton/sampling.py), as the CUDA platform picks them."""
    from pagedllm.config import KernelConfig
    from pagedllm.platforms.cuda import CudaPlatform

    stage = CudaPlatform().inverse_cdf_stage(KernelConfig(triton_sampler=request.param == "triton"))
    assert (stage is None) == (request.param == "torch")
    return lambda: Sampler(inverse_cdf=stage)


def test_metadata_and_sampling_queue_without_host_sync(make_sampler):
    logits = torch.randn(6, V, device=CUDA)
    sampler = make_sampler()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        md = make_sampling_metadata(_mixed_rows(), V, CUDA)
        sampled = sampler.sample(logits, md)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    tokens = sampled.tolist()  # the one copy per step
    assert len(tokens) == 6 and tokens[0] == int(logits[0].argmax())


def test_processing_and_truncation_match_cpu(make_sampler):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, V, generator=gen) * 3
    rows = _mixed_rows()
    md_cpu, md_gpu = make_sampling_metadata(rows, V, torch.device("cpu")), make_sampling_metadata(rows, V, CUDA)
    cpu, gpu = process_logits(logits, md_cpu), process_logits(logits.to(CUDA), md_gpu)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    for md, x in ((md_cpu, cpu), (md_gpu, gpu)):
        apply_top_k(x, md.top_k, md.max_top_k)
        apply_top_p(x, md.top_p_rows, md.top_p, md.top_p_max_top_k)
        apply_min_p(x, md.min_p)
    assert torch.equal(torch.isinf(gpu).cpu(), torch.isinf(cpu))


def test_top_p_full_sort_on_gpu_equals_partial_sort_on_cpu(make_sampler):
    # flat rows: the kept set is larger than the 256 tokens the CPU path sorts first
    logits = torch.randn(4, 5000, generator=torch.Generator().manual_seed(2)) * 0.1
    rows, top_p = torch.arange(4), torch.tensor([0.3, 0.6, 0.9, 0.99])
    cpu, gpu = logits.clone(), logits.to(CUDA)
    apply_top_p(cpu, rows, top_p, None)
    apply_top_p(gpu, rows.to(CUDA), top_p.to(CUDA), None)
    assert torch.equal(torch.isinf(gpu).cpu(), torch.isinf(cpu))


def test_seeded_rows_reproduce_in_any_batch(make_sampler):
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(1, V, generator=gen).to(CUDA)
    seeded = _row(temperature=1.0, seed=1234)
    alone = make_sampler().forward(target, make_sampling_metadata([seeded], V, CUDA)).sampled_token_ids[0]
    others = torch.randn(5, V, generator=gen).to(CUDA)
    batch = torch.cat([others[:3], target, others[3:]])
    rows = [_row(temperature=1.0)] * 3 + [seeded] + [_row(temperature=0.5, seed=9)] * 2
    in_batch = make_sampler().forward(batch, make_sampling_metadata(rows, V, CUDA)).sampled_token_ids[3]
    assert alone == in_batch
    draws = {make_sampler().forward(target, make_sampling_metadata([_row(temperature=1.0, seed=s)], V, CUDA))
             .sampled_token_ids[0] for s in range(20)}
    assert len(draws) > 5  # different seeds do sample differently
