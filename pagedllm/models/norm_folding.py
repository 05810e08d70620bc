"""Fold each decoder layer's RMSNorm weight into the projection that reads the norm's output.

    norm(h) W = (h / rms(h)) diag(g) W = (1 / rms(h)) * (h W'),   W' = diag(g) W

So the qkv and gate_up projections can read the hidden state h itself, with g folded into their
weights once at load, and the kernel that consumes their output multiplies each row by
1 / rms(h): the attention backend's prologue (for q, k, v) and SiLU-and-mul (for gate, up). The
norm itself becomes a FoldedRMSNorm, which runs nothing and hands (h, (h, eps)) to its layer.

Why: at batch-1 decode each norm is a short launch that reads a few KB; the two per layer add
up over a large model's layers (RESULTS.md, bench_fold_norms.py). It pays only where the
consumers fuse the scale, so the platform turns it on (LayerKernels.fold_norms) where the ops
are Triton and the attention backend fuses the norm scale, and KernelConfig.fold_norms can turn
it off.

Rounding differs from the unfolded model by about one bf16 unit: W' is rounded once, and the
activations are scaled after the GEMM instead of before. Greedy outputs in float32 match HF's
(tests/gpu); bf16 is held to vLLM's top-5 criterion like the rest of the CUDA path.

A mixture-of-experts layer keeps its post-attention norm (its router reads the norm's output as
well as the experts). A projection with a bias keeps its norm (the bias must not be scaled): Qwen2's qkv; so does one
whose linear method cannot scale its weight's input rows (a quantized format). Folding runs after
the weights are loaded and before the linear methods repack them.
"""
from __future__ import annotations

import torch
from torch import nn

from pagedllm.layers.linear import Linear, MergedLinear
from pagedllm.layers.norm import NormScale, RMSNorm
from pagedllm.models.common import DecoderAttention, DecoderForCausalLM, DecoderLayer, GatedMLP


class FoldedRMSNorm(nn.Module):
    """An RMSNorm whose weight lives in the next projection: the projection reads h itself and
    its consumer scales each row by 1 / rms(h)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def prepare(self, h: torch.Tensor) -> tuple[torch.Tensor, NormScale | None]:
        """(h, (h, eps)): see RMSNorm.prepare."""
        return h, (h, self.eps)


@torch.no_grad()
def _fold(norm: RMSNorm, proj: Linear) -> bool:
    if proj.bias is not None:
        return False
    return proj.method.scale_input_rows_(proj, norm.weight.float())


def fold_norms(model: DecoderForCausalLM) -> int:
    """Fold the norms of every decoder layer of `model` (a DecoderForCausalLM) into their
    projections in place; returns how many norms were folded."""
    layers = model.model.layers
    if any(isinstance(m, FoldedRMSNorm) for m in layers.modules()):
        raise ValueError("The norms of this model are already folded.")
    folded = 0
    for layer in layers:
        if not isinstance(layer, DecoderLayer):  # another pipeline stage's
            continue
        # a mixture of experts keeps its norm (the router reads the normalised rows too), and so does
        # latent attention (MLA: two projections read them)
        targets: list[tuple[str, MergedLinear]] = []
        if isinstance(layer.self_attn, DecoderAttention):
            targets.append(("input_layernorm", layer.self_attn.qkv_proj))
        if isinstance(layer.mlp, GatedMLP):
            targets.append(("post_attention_layernorm", layer.mlp.gate_up_proj))
        for norm_name, proj in targets:
            norm = getattr(layer, norm_name)
            if _fold(norm, proj):
                setattr(layer, norm_name, FoldedRMSNorm(norm.eps))
                folded += 1
    return folded
