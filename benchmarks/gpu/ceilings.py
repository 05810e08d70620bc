"""The card's two ceilings, measured in the same run as the numbers judged against them, and the
model counts (parameters, bytes per decode step) the rooflines divide by them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Ceilings:
    copy_bytes_per_s: float  # device-to-device copy, bytes read + written per second
    bf16_flops_per_s: float  # dense bf16 GEMM


def _time_ms(fn, iters: int) -> float:
    """Fastest milliseconds of `fn` over `iters` runs, timed with CUDA events after a warm-up.
    The fastest, not the median: a ceiling is what the card demonstrably reaches, and a slow
    moment (clocks ramping up at process start) would lower it and flatter every fraction judged
    against it. In one session's calls the median of 20 copies gave 2.90-2.98 TB/s per process."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return min(times)


def back_to_back_ms(fn, iters: int = 50) -> float:
    """Mean milliseconds of `fn` over `iters` runs queued back to back (no host gaps between them),
    timed with CUDA events after one warm-up run."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def _copy_ms(n: int) -> float:
    """ms to copy n bf16 values (the buffers are freed on return, before the GEMM's)."""
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    return _time_ms(lambda: dst.copy_(src), 50)


def measure_ceilings() -> Ceilings:
    n = 1 << 29  # 1 GiB of bf16, far past the L2
    copy_ms = _copy_ms(n)
    size = 8192
    a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    gemm_ms = _time_ms(lambda: a @ b, 50)
    return Ceilings(copy_bytes_per_s=2 * n * 2 / (copy_ms / 1e3), bf16_flops_per_s=2 * size**3 / (gemm_ms / 1e3))


@dataclass(frozen=True)
class ModelCounts:
    matmul_params: int  # every weight a token's forward multiplies by (the LM head included)
    embedding_params: int  # the input embedding: a lookup, one row read per token
    kv_bytes_per_token: int  # K and V of one token, all layers
    dtype_bytes: int
    head_params: int = 0  # the LM head's share of matmul_params (never quantized)
    # bytes per weight of the decoder's projections where quantized (fp8: 1; int4 with group-128
    # scales: about 0.53); None: dtype_bytes
    layer_weight_bytes: float | None = None

    def weight_bytes(self) -> float:
        """Bytes of the weights a decode step reads once."""
        per = self.layer_weight_bytes if self.layer_weight_bytes is not None else self.dtype_bytes
        return (self.matmul_params - self.head_params) * per + self.head_params * self.dtype_bytes


def model_counts(cfg: Any, dtype_bytes: int = 2, layer_weight_bytes: float | None = None,
                 kv_bytes: int | None = None) -> ModelCounts:
    h, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    attn, kv_row = _attention_params(cfg)
    mlp = sum(_mlp_params(cfg, i) for i in range(layers))
    return ModelCounts(
        matmul_params=layers * attn + mlp + h * vocab,  # norms are negligible
        embedding_params=h * vocab,
        kv_bytes_per_token=layers * kv_row * (kv_bytes or dtype_bytes),
        dtype_bytes=dtype_bytes,
        head_params=h * vocab,
        layer_weight_bytes=layer_weight_bytes,
    )


def _attention_params(cfg: Any) -> tuple[int, int]:
    """(the attention weights one token multiplies by at a layer, the values it caches there):
    q, k, v and o with K and V rows per kv head; or MLA's projections (W_UK and W_UV absorbed, as
    they run) with one latent row."""
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    rank = getattr(cfg, "kv_lora_rank", None)
    if rank:
        qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        q_lora = getattr(cfg, "q_lora_rank", None)
        q = h * q_lora + q_lora * heads * qk if q_lora else h * heads * qk
        kv = h * (rank + cfg.qk_rope_head_dim) + rank * heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
        return q + kv + heads * cfg.v_head_dim * h, rank + cfg.qk_rope_head_dim
    kv_heads = getattr(cfg, "num_key_value_heads", heads)
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    return h * head_dim * (heads + 2 * kv_heads) + heads * head_dim * h, 2 * kv_heads * head_dim


def _mlp_params(cfg: Any, layer: int) -> int:
    """The MLP weights one token multiplies by at this layer: a mixture of experts' router, its
    top-k experts and its shared expert (the experts a batch-1 step actually reads), else the
    dense MLP."""
    h = cfg.hidden_size
    num_experts = (getattr(cfg, "n_routed_experts", None) or getattr(cfg, "num_experts", None)
                   or getattr(cfg, "num_local_experts", None) or 0)
    step = getattr(cfg, "decoder_sparse_step", 1) or 1
    sparse = (num_experts and layer not in (getattr(cfg, "mlp_only_layers", None) or []) and (layer + 1) % step == 0
              and layer >= (getattr(cfg, "first_k_dense_replace", 0) or 0))
    if not sparse:
        return 3 * h * cfg.intermediate_size
    expert_inter = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
    shared = (getattr(cfg, "shared_expert_intermediate_size", 0)
              or expert_inter * (getattr(cfg, "n_shared_experts", 0) or 0))
    shared_gate = h if getattr(cfg, "shared_expert_intermediate_size", 0) else 0  # Qwen2-MoE's sigmoid gate
    return h * num_experts + cfg.num_experts_per_tok * 3 * h * expert_inter + 3 * h * shared + shared_gate


def decode_step_roofline_s(counts: ModelCounts, batch: int, avg_context: float, ceilings: Ceilings) -> float:
    """Fewest seconds a decode step can take on this card when it is bound by memory: every
    weight read once, plus each request's K/V so far."""
    kv_bytes = batch * avg_context * counts.kv_bytes_per_token
    return (counts.weight_bytes() + kv_bytes) / ceilings.copy_bytes_per_s


def compute_roofline_tokens_per_s(counts: ModelCounts, ceilings: Ceilings) -> float:
    """Most tokens per second (prompt + output) the bf16 matrix units allow: 2 FLOPs per weight."""
    return ceilings.bf16_flops_per_s / (2 * counts.matmul_params)
