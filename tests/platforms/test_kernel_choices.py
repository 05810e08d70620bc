"""Each kernel choice set through KernelConfig takes effect where the platform resolves it: the
attention backend and its options, the layer kernels, the linear methods, the sampler's stage and
the CPU's threads. The CUDA platform's resolution runs without a GPU (only running needs one)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pagedllm.attention.base import AttentionBackendOptions
from pagedllm.config import KernelConfig
from pagedllm.layers.layer_kernels import OpImpl
from pagedllm.platforms.cpu import CpuPlatform



def cuda_platform():
    pytest.importorskip("triton")
    from pagedllm.platforms.cuda import CudaPlatform

    return CudaPlatform()


def test_cuda_defaults_take_triton_everywhere():
    platform, config = cuda_platform(), KernelConfig()
    assert platform.attention_backend_name(config) == "triton"
    kernels = platform.layer_kernels(config)
    assert kernels.ops is OpImpl.TRITON and kernels.fold_norms
    assert kernels.attention.fuses_rotary and kernels.attention.cuda_graphs
    assert platform.inverse_cdf_stage(config) is not None


def test_triton_off_runs_torch_ops_and_the_torch_backend():
    """KernelConfig.triton (the former PAGEDLLM_TRITON)."""
    platform, config = cuda_platform(), KernelConfig(triton=False)
    assert platform.attention_backend_name(config) == "torch"
    kernels = platform.layer_kernels(config)
    assert kernels.ops is OpImpl.TORCH and not kernels.fold_norms
    assert not kernels.attention.fuses_rotary
    assert platform.inverse_cdf_stage(config) is None
    with pytest.raises(ValueError, match="needs triton=True"):
        KernelConfig(triton=False, attention_backend="triton")


def test_fold_norms_choice_and_its_conditions():
    """KernelConfig.fold_norms (the former PAGEDLLM_FOLD_NORMS): on where the ops are Triton and the
    backend fuses the norm scale; never on the CPU."""
    platform = cuda_platform()
    assert platform.layer_kernels(KernelConfig()).fold_norms
    assert not platform.layer_kernels(KernelConfig(fold_norms=False)).fold_norms
    assert not platform.layer_kernels(KernelConfig(attention_backend="torch")).fold_norms  # backend can't fuse
    assert not CpuPlatform().layer_kernels(KernelConfig()).fold_norms


def test_decode_rotary_and_pdl_reach_the_triton_backend():
    """KernelConfig.decode_rotary and gemm_pdl (the former PAGEDLLM_DECODE_ROTARY and
    PAGEDLLM_GEMV_PDL): the backend's options; decode attention joins the PDL chain only where the
    skinny GEMMs after it may run with PDL."""
    platform, options = cuda_platform(), AttentionBackendOptions(max_num_seqs=8, max_model_len=64)

    def built(**choices: object) -> AttentionBackendOptions:
        return platform.make_attention_backend(KernelConfig(**choices), options).options

    assert built().rotary_in_decode and built().pdl
    assert not built(decode_rotary=False).rotary_in_decode
    assert not built(gemm_pdl=False).pdl
    assert not built(skinny_gemm="off").pdl
    assert built().max_model_len == 64


def test_decode_rotary_off_keeps_the_separate_rotary_launch(monkeypatch):
    """With decode_rotary off, a decode step rotates and writes the cache in its own kernel before
    attention (no new K/V handed to the attention kernel)."""
    pytest.importorskip("triton")
    from pagedllm.attention import triton_paged
    from pagedllm.attention.base import QKVPrologue
    from pagedllm.attention.triton_paged import TritonPagedAttentionBackend
    from tests.helpers.attn_metadata import build_metadata

    seen = []
    monkeypatch.setattr(triton_paged, "paged_attention", lambda *a, **kw: seen.append(kw.get("new_kv")))
    monkeypatch.setattr(triton_paged, "rotary_embedding_and_cache_", lambda *a, **kw: seen.append("rotary"))
    md = build_metadata([5], [1], [[0, 1]], block_size=4)
    q, kv = torch.zeros(1, 2, 8), torch.zeros(1, 1, 8)
    prologue = QKVPrologue(torch.zeros(1, dtype=torch.long), torch.zeros(16, 8))
    cache = torch.zeros(2, 4, 4, 1, 8)
    for rotary_in_decode, expect_separate in ((True, False), (False, True)):
        seen.clear()
        backend = TritonPagedAttentionBackend(AttentionBackendOptions(rotary_in_decode=rotary_in_decode))
        backend.num_splits = lambda *a: 1  # type: ignore[method-assign]
        backend.forward(q, kv, kv, cache, md, 1.0, prologue)
        assert (seen[0] == "rotary") == expect_separate
        assert (seen[-1] is None) == expect_separate  # the attention kernel got no new K/V to write


def test_cpu_kernels_off_runs_torch_everywhere():
    """KernelConfig.cpu_kernels (the former PAGEDLLM_CPU_KERNELS)."""
    platform, config = CpuPlatform(), KernelConfig(cpu_kernels=False)
    assert platform.layer_kernels(config).ops is OpImpl.TORCH
    assert platform.make_attention_backend(config, AttentionBackendOptions()).options.cpu_kernels is None
    assert platform.inverse_cdf_stage(config) is None
    on = platform.layer_kernels(KernelConfig())
    if on.cpu_ops is None:
        pytest.skip("the C++ kernels cannot be built here")
    assert on.ops is OpImpl.CPU


def test_cpu_threads_choice_takes_effect():
    """KernelConfig.cpu_threads (the former PAGEDLLM_CPU_THREADS)."""
    before = torch.get_num_threads()
    try:
        CpuPlatform().set_num_threads(KernelConfig(cpu_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="cpu_threads"):
        KernelConfig(cpu_threads=0)


def test_every_choice_is_a_flag_and_documented():
    """Each KernelConfig field is an engine argument, a CLI flag and a row of the README's table."""
    import argparse
    import os

    from pagedllm.bench.common import add_engine_args
    from pagedllm.engine.arg_utils import EngineArgs

    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    flags = {o for a in parser._actions for o in a.option_strings}
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    for f in dataclasses.fields(KernelConfig):
        assert f.name in EngineArgs.__dataclass_fields__
        assert "--" + f.name.replace("_", "-") in flags
        assert f"`{f.name}`" in readme and f"PAGEDLLM_{f.name.upper()}" in readme, f.name
