"""Fold each decoder layer's RMSNorm weight into the projection that reads the norm's output.

    norm(h) W = (h / rms(h)) diag(g) W = (1 / rms(h)) * (h W'),   W' = diag(g) W

So the qkv and gate_up projections can read the hidden state h itself, with g folded into their
weights once at load, and the kernel that consumes their output multiplies each row by
1 / rms(h): the decode attention kernel (for q, k, v) and SiLU-and-mul (for gate, up). The two
RMSNorm launches of every layer are gone; with them the residual adds, which the o and down
projections now do as their GEMM's epilogue (beta = 1) into the one hidden-state tensor.

Why: at batch-1 decode of a Llama-3-8B shape each norm is a ~2 us launch that reads 8 KB, 64 of
them a step; in a CUDA graph of the 32 layers' projections this saves 0.12 ms of 5.3
(benchmarks/gpu/bench_fold_norms.py, RESULTS.md).

Rounding differs from the unfolded model by about one bf16 unit: W' is rounded once, and the
activations are scaled after the GEMM instead of before. Greedy outputs in float32 match HF's
(tests/gpu); bf16 is held to vLLM's top-5 criterion like the rest of the CUDA path.

Only where it pays and its consumers have kernels: CUDA with Triton (PAGEDLLM_FOLD_NORMS=0
turns it off for A/B runs). A projection with a bias keeps its norm (the bias must not be
scaled): Qwen2's qkv.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from pagedllm.kernels.triton import triton_available
from pagedllm.layers.linear import Linear
from pagedllm.layers.norm import RMSNorm


_ROWS_PER_CHUNK = 512  # an 8B gate_up: 512 x 28672 float32 = 56 MiB at a time


def norm_folding_enabled(device: str | torch.device) -> bool:
    return (torch.device(device).type == "cuda" and triton_available()
            and os.environ.get("PAGEDLLM_FOLD_NORMS", "1") != "0")


@torch.no_grad()
def _fold(norm: RMSNorm, proj: Linear) -> bool:
    if proj.bias is not None or proj.panels is not None or proj.packed_weight is not None:
        return False
    w = proj.weight_t  # [in, out]: the norm's weight scales the input rows
    g = norm.weight.float()
    for start in range(0, w.shape[0], _ROWS_PER_CHUNK):  # bounded float32 temporaries
        rows = w[start:start + _ROWS_PER_CHUNK]
        rows.copy_((rows.float() * g[start:start + _ROWS_PER_CHUNK, None]).to(w.dtype))
    return True


def fold_norms(model: nn.Module) -> int:
    """Fold the norms of every decoder layer of `model` (a DecoderForCausalLM) in place and switch
    its forward to the in-place residual; returns how many norms were folded."""
    decoder = model.model
    if decoder.residual_in_place:
        raise ValueError("The norms of this model are already folded.")
    folded = 0
    for layer in decoder.layers:
        layer.input_norm_folded = _fold(layer.input_layernorm, layer.self_attn.qkv_proj)
        layer.post_norm_folded = _fold(layer.post_attention_layernorm, layer.mlp.gate_up_proj)
        folded += layer.input_norm_folded + layer.post_norm_folded
    decoder.residual_in_place = True
    return folded
