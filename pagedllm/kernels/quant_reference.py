"""Torch references of the quantized weight formats of safetensors checkpoints: what a stored
weight means in real numbers, and the activation quantization the W8A8 GEMMs apply. The CPU's
fallback methods run on them, and every Triton kernel of these formats is tested against them.

FP8 is e4m3 ("float8_e4m3fn": finite only, largest 448), the format of vLLM's and HF's FP8
checkpoints. A weight's scale is a multiplier (w = q * scale), whatever its checkpoint name
(`weight_scale`, or `weight_scale_inv` for block scales, where the name is historical):

* per channel: scale [out] (a per-tensor scale is expanded to its rows at load);
* block: scale [ceil(out / B), ceil(in / B)], one per B x B tile (B = 128 in DeepSeek-V3 and
  Qwen3-FP8).

Activations are quantized per token (or per token and group of `group` input features, for block
weights) with a dynamic scale amax / 448, floored so an all-zero row stays finite.
"""
from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_SCALE = 1e-12 / FP8_MAX  # a zero row's scale: its quantized values are 0 either way


def expand_block_scale(scale: torch.Tensor, rows: int, cols: int, block: tuple[int, int]) -> torch.Tensor:
    """[ceil(rows / bn), ceil(cols / bk)] block scales -> one per element [rows, cols]."""
    bn, bk = block
    return scale.repeat_interleave(bn, 0)[:rows].repeat_interleave(bk, 1)[:, :cols]


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor,
                   block: tuple[int, int] | None = None) -> torch.Tensor:
    """weight fp8 [out, in] with per-channel scale [out] (block None) or block scales -> float32."""
    w = weight.float()
    if block is None:
        return w * scale.float().view(-1, 1)
    return w * expand_block_scale(scale.float(), w.shape[0], w.shape[1], block)


def quantize_fp8_weight(weight: torch.Tensor,
                        block: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A real weight [out, in] -> (fp8 [out, in], scale): per output channel (block None), or
    per block, each scale amax / 448 of what it covers."""
    w = weight.float()
    if block is None:
        scale = (w.abs().amax(dim=1) / FP8_MAX).clamp_min(MIN_SCALE)
        return (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale
    bn, bk = block
    rows, cols = w.shape
    padded = torch.zeros(-(-rows // bn) * bn, -(-cols // bk) * bk, dtype=torch.float32, device=w.device)
    padded[:rows, :cols] = w
    tiles = padded.view(padded.shape[0] // bn, bn, padded.shape[1] // bk, bk)
    scale = (tiles.abs().amax(dim=(1, 3)) / FP8_MAX).clamp_min(MIN_SCALE)
    q = (w / expand_block_scale(scale, rows, cols, block)).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def quantize_fp8_rows(x: torch.Tensor, group: int | None = None,
                      static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations x [M, K] -> (fp8 [M, K], scales float32 [M, ceil(K / group)]): one scale per
    row and group of `group` features (None: the whole row), amax / 448; or the checkpoint's
    static per-tensor scale, broadcast to [M, 1]."""
    m, k = x.shape
    xf = x.float()
    if static_scale is not None:
        scale = static_scale.float().reshape(1, 1).expand(m, 1)
        return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale.contiguous()
    g = k if group is None else group
    groups = -(-k // g)
    padded = torch.zeros(m, groups * g, dtype=torch.float32, device=x.device)
    padded[:, :k] = xf
    scale = (padded.view(m, groups, g).abs().amax(dim=2) / FP8_MAX).clamp_min(MIN_SCALE)
    q = (xf / scale.repeat_interleave(g, 1)[:, :k]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def fp8_scaled_mm(xq: torch.Tensor, x_scale: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor,
                  block: tuple[int, int] | None, out_dtype: torch.dtype) -> torch.Tensor:
    """(xq * x_scale) @ (weight * w_scale)^T in float32, rounded to out_dtype once: what a W8A8
    GEMM computes from quantized activations (x_scale [M, groups]) and an fp8 weight [N, K]."""
    k = xq.shape[1]
    g = k if x_scale.shape[1] == 1 else block[1] if block is not None else -(-k // x_scale.shape[1])
    x = xq.float() * x_scale.float().repeat_interleave(g, 1)[:, :k]
    return (x @ dequantize_fp8(weight, w_scale, block).t()).to(out_dtype)
