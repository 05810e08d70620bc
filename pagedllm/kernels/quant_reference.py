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


def block_scale_shape(rows: int, cols: int, block: tuple[int, int] | None) -> tuple[int, ...]:
    """The shape of a [rows, cols] fp8 weight's scales: [rows] per channel, else one per block."""
    if block is None:
        return (rows,)
    return (-(-rows // block[0]), -(-cols // block[1]))


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


# INT4 weight-only (W4A16): AWQ, GPTQ. Whatever the checkpoint's packing, a loaded weight is held as
#   qweight int32 [K / 8, N]  (nibble i of row r: input feature 8 r + i, as GPTQ packs rows),
#   scales [K / G, N] and zeros [K / G, N] in the activations' dtype (zeros: integers 0..15),
# and means w[k, n] = (q[k, n] - zeros[k // G, n]) * scales[k // G, n] ([in, out], transposed from HF's
# [out, in] linear weight). Symmetric formats have zeros 8.
_AWQ_SHIFTS = (0, 16, 4, 20, 8, 24, 12, 28)  # AWQ's nibble of each of 8 consecutive columns
_SEQ_SHIFTS = (0, 4, 8, 12, 16, 20, 24, 28)


def unpack_int4_cols(packed: torch.Tensor, awq_order: bool = False) -> torch.Tensor:
    """int32 [R, C / 8] packed along columns -> uint8 [R, C] (AWQ's interleaved nibble order, or
    sequential: GPTQ's qzeros)."""
    shifts = torch.tensor(_AWQ_SHIFTS if awq_order else _SEQ_SHIFTS, dtype=torch.int32, device=packed.device)
    values = (packed.to(torch.int32)[:, :, None] >> shifts) & 0xF
    return values.reshape(packed.shape[0], -1).to(torch.uint8)


def unpack_int4_rows(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R / 8, C] packed along rows (GPTQ's qweight, ours) -> uint8 [R, C]."""
    shifts = torch.tensor(_SEQ_SHIFTS, dtype=torch.int32, device=packed.device)
    values = (packed.to(torch.int32)[:, None, :] >> shifts[None, :, None]) & 0xF
    return values.reshape(-1, packed.shape[1]).to(torch.uint8)


def pack_int4_rows(q: torch.Tensor) -> torch.Tensor:
    """uint8 [R, C] of 0..15 (R a multiple of 8) -> int32 [R / 8, C], nibble i of row r = row 8 r + i."""
    values = q.to(torch.int32).reshape(-1, 8, q.shape[1])
    packed = torch.zeros(values.shape[0], q.shape[1], dtype=torch.int32, device=q.device)
    for i in range(8):
        packed |= values[:, i] << (4 * i)
    return packed


def pack_int4_cols(q: torch.Tensor, awq_order: bool = False) -> torch.Tensor:
    """uint8 [R, C] of 0..15 (C a multiple of 8) -> int32 [R, C / 8]: unpack_int4_cols' inverse."""
    shifts = _AWQ_SHIFTS if awq_order else _SEQ_SHIFTS
    values = q.to(torch.int32).reshape(q.shape[0], -1, 8)
    packed = torch.zeros(values.shape[0], values.shape[1], dtype=torch.int32, device=q.device)
    for j, shift in enumerate(shifts):
        packed |= values[:, :, j] << shift
    return packed


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    """Our layout (above) -> float32 [K, N]."""
    q = unpack_int4_rows(qweight).float()
    s = scales.float().repeat_interleave(group, 0)[: q.shape[0]]
    z = zeros.float().repeat_interleave(group, 0)[: q.shape[0]]
    return (q - z) * s


def quantize_int4(weight_t: torch.Tensor, group: int,
                  symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A real weight [K, N] -> (q uint8 [K, N] of 0..15, scales float32 [K / G, N], zeros uint8
    [K / G, N]): per group of G input features and output column, min-max (asymmetric) or
    absmax with zero 8 (symmetric), as AWQ and GPTQ quantize."""
    k, n = weight_t.shape
    w = weight_t.float().reshape(k // group, group, n)
    if symmetric:
        scale = (w.abs().amax(dim=1) / 7.5).clamp_min(1e-8)
        zero = torch.full_like(scale, 8.0)
    else:
        lo, hi = w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0)
        scale = ((hi - lo) / 15).clamp_min(1e-8)
        zero = (-lo / scale).round().clamp(0, 15)
    q = (w / scale[:, None] + zero[:, None]).round().clamp(0, 15)
    return q.reshape(k, n).to(torch.uint8), scale, zero.to(torch.uint8)
