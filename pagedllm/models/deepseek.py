"""DeepSeek-V2 and -V3: multi-head latent attention (MLA) and mixtures of experts with shared
experts and grouped routing; the first first_k_dense_replace layers have a dense MLP.

MLA. Each token's keys and values come from one latent row: c = norm(x W_DKV) (kv_lora_rank) and a
rotary key part k_pe (qk_rope_head_dim) shared by every head. The paged cache holds only [c, k_pe]
(576 values a token for DeepSeek-V3), one "head" whose K and V are the same rows
(KVLayout.shared). Attention runs in the absorbed form for every step: head h's query
[q_nope_h W_UK_h, q_pe_h] against the cached rows gives the same scores as the expanded keys
[W_UK_h c, k_pe], and the same rows weighted by the probabilities, cut to c's part and multiplied by
W_UV_h, give head h's output. So MLA is multi-query attention over [c, k_pe] through the ordinary
attention backends, with W_UK folded into the query before and W_UV into the output after.

Rotary: DeepSeek rotates interleaved pairs (V3 with rope_interleave, V2 always); the rotary rows of
q and k_pe are permuted at load (even dimensions first) so the neox rotation computes the same
scores. YaRN scaling comes with its softmax scale (mscale_all_dim).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from pagedllm.distributed.parallel_state import current_tensor_parallel, divide
from pagedllm.kernels.quant_reference import dequantize_fp8
from pagedllm.layers.attention import Attention
from pagedllm.layers.fused_moe import FusedMoE
from pagedllm.layers.layer_kernels import current_layer_kernels
from pagedllm.layers.linear import Linear
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param
from pagedllm.layers.moe_routing import RoutingSpec
from pagedllm.layers.norm import NormScale, RMSNorm
from pagedllm.layers.parallel_linear import ColumnParallelLinear, RowParallelLinear
from pagedllm.layers.rotary import RotaryEmbedding, rope_config_from_hf, yarn_factor, yarn_mscale
from pagedllm.layers.tensor_shards import narrow
from pagedllm.models.common import DecoderForCausalLM, DecoderOptions, GatedMLP, KVLayout, MlpFactory
from pagedllm.quantization.fp8 import Fp8Scheme


def mla_softmax_scale(cfg: Any) -> float:
    """qk_head_dim ** -0.5, times mscale(factor, mscale_all_dim)**2 under YaRN (DeepSeek's)."""
    scale = float((cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5)
    rope = rope_config_from_hf(cfg)
    mscale_all_dim = rope.params.get("mscale_all_dim", 0)
    if rope.rope_type != "default" and mscale_all_dim:
        mscale = yarn_mscale(yarn_factor(rope), mscale_all_dim)
        scale *= mscale * mscale
    return scale


class LatentUpProjection(HFWeightLoadable):
    """kv_b_proj, [H * (qk_nope + v), kv_lora_rank]: never applied to the latent itself; its W_UK
    part is folded into the query and its W_UV part into the output. An FP8 checkpoint's (its
    weight and scales) is dequantized at load: the absorbed products want it in the model's dtype,
    and it is small (a rank-wide matrix)."""

    def __init__(self, num_heads: int, nope: int, v_dim: int, rank: int, dtype: torch.dtype,
                 prefix: str = "") -> None:
        super().__init__()
        self.num_heads, self.nope, self.v_dim = num_heads, nope, v_dim
        self.weight = new_param(num_heads * (nope + v_dim), rank, dtype=dtype)
        scheme = current_layer_kernels().scheme_of([prefix])
        if scheme is not None and not isinstance(scheme, Fp8Scheme):
            raise ValueError(f"{scheme.name} quantization of latent attention's kv_b_proj is not supported (supported: "
                             "fp8).")
        self._fp8: Fp8Scheme | None = scheme
        self._tp = current_tensor_parallel()  # num_heads are this rank's
        if scheme is not None and self._tp.size > 1:
            raise ValueError("Tensor parallelism over an FP8 checkpoint's latent attention (kv_b_proj) is not "
                             "supported yet.")
        self._stored: dict[str, torch.Tensor] = {}  # an fp8 weight's parts until both have come

    def w_uk(self) -> torch.Tensor:  # [H, nope, rank]
        return self.weight.view(self.num_heads, self.nope + self.v_dim, -1)[:, : self.nope]

    def w_uv(self) -> torch.Tensor:  # [H, v, rank]
        return self.weight.view(self.num_heads, self.nope + self.v_dim, -1)[:, self.nope:]

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        keys: list[tuple[str, str | None]] = [("weight", None)]
        return keys + ([(self._fp8.scale_attr, None)] if self._fp8 is not None else [])

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if (attr, shard) not in self.hf_weight_keys():
            raise ValueError(f"Unexpected kv_b_proj parameter {attr!r}.")
        if self._tp.size > 1:  # this rank's heads' rows (unquantized: an FP8 one is refused above)
            rows = self.weight.shape[0]
            tensor = narrow(tensor, 0, self._tp.rank * rows, rows)
        if self._fp8 is None:
            copy_checked(self.weight, tensor, "kv_b_proj weight")
            return
        self._stored[attr] = tensor
        if len(self._stored) == 2:
            weight, scale = self._stored["weight"], self._stored[self._fp8.scale_attr].float()
            if self._fp8.block is None:
                scale = scale.reshape(-1).expand(weight.shape[0]) if scale.numel() == 1 else scale.reshape(-1)
            copy_checked(self.weight, dequantize_fp8(weight, scale, self._fp8.block), "kv_b_proj weight (dequantized)")
            self._stored.clear()


class MLAAttention(nn.Module):
    """HF's names: q_proj, or q_a_proj + q_a_layernorm + q_b_proj (q_lora_rank); kv_a_proj_with_mqa,
    kv_a_layernorm, kv_b_proj, o_proj."""

    def __init__(self, cfg: Any, layer_idx: int, dtype: torch.dtype, prefix: str) -> None:
        super().__init__()
        hidden, total_heads = cfg.hidden_size, cfg.num_attention_heads
        # Under tensor parallelism the heads split (q, kv_b and o with them); the latent and its
        # projection are every rank's, so each rank's cache holds the same rows.
        heads = divide(total_heads, current_tensor_parallel().size, "The number of attention heads")
        self.num_heads, self.nope, self.rope_dim = heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.rank, self.v_dim = cfg.kv_lora_rank, cfg.v_head_dim
        bias = bool(getattr(cfg, "attention_bias", False))
        q_size = total_heads * (self.nope + self.rope_dim)
        self.q_lora = bool(getattr(cfg, "q_lora_rank", None))
        if self.q_lora:
            self.q_a_proj = Linear(hidden, cfg.q_lora_rank, bias=bias, dtype=dtype, prefix=f"{prefix}.q_a_proj")
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps, dtype)
            self.q_b_proj = ColumnParallelLinear(cfg.q_lora_rank, q_size, bias=False, dtype=dtype,
                                                 prefix=f"{prefix}.q_b_proj")
        else:
            self.q_proj = ColumnParallelLinear(hidden, q_size, bias=False, dtype=dtype, prefix=f"{prefix}.q_proj")
        self.kv_a_proj_with_mqa = Linear(hidden, self.rank + self.rope_dim, bias=bias, dtype=dtype,
                                         prefix=f"{prefix}.kv_a_proj_with_mqa")
        self.kv_a_layernorm = RMSNorm(self.rank, cfg.rms_norm_eps, dtype)
        self.kv_b_proj = LatentUpProjection(heads, self.nope, self.v_dim, self.rank, dtype,
                                            prefix=f"{prefix}.kv_b_proj")
        self.o_proj = RowParallelLinear(total_heads * self.v_dim, hidden, bias=bias, dtype=dtype,
                                        prefix=f"{prefix}.o_proj")
        self.rotary_emb = RotaryEmbedding(self.rope_dim, self.rope_dim, cfg.max_position_embeddings,
                                          rope_config_from_hf(cfg))
        # multi-query attention over the cached [c, k_pe] rows (K and V alike)
        self.attn = Attention(heads, self.rank + self.rope_dim, 1, mla_softmax_scale(cfg), layer_idx)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor,  # [T], [T, H] x2
                norm_scale: NormScale | None = None) -> torch.Tensor:
        """residual += the attention block's output of x, in place; returns residual (its input
        norm is never folded: norm_scale is None)."""
        assert norm_scale is None
        num_tokens, heads = x.shape[0], self.num_heads
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if self.q_lora else self.q_proj(x)
        q_nope, q_pe = q.view(num_tokens, heads, -1).split([self.nope, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope_dim], dim=-1)
        q_pe, k_pe = self.rotary_emb(positions, q_pe.reshape(num_tokens, -1), k_pe.contiguous())
        q_latent = torch.einsum("thn,hnr->thr", q_nope, self.kv_b_proj.w_uk())  # [T, H, rank]
        query = torch.cat([q_latent, q_pe.view(num_tokens, heads, self.rope_dim)], dim=-1)
        row = torch.cat([self.kv_a_layernorm(latent.contiguous()), k_pe.view(num_tokens, self.rope_dim)], dim=-1)
        out = self.attn.forward_latent(query.view(num_tokens, -1), row, self.rank)  # [T, H, rank]
        heads_out = torch.einsum("thr,hvr->thv", out, self.kv_b_proj.w_uv()).reshape(num_tokens, -1)
        return self.o_proj.accumulate_(residual, heads_out)


class GroupedRouter(HFWeightLoadable):
    """mlp.gate: the router's weight [E, H] and (V3) e_score_correction_bias [E], both float32,
    applied in float32 as HF does."""

    def __init__(self, num_experts: int, hidden_size: int, correction_bias: bool) -> None:
        super().__init__()
        self.weight = new_param(num_experts, hidden_size, dtype=torch.float32)
        self.e_score_correction_bias = new_param(num_experts, dtype=torch.float32) if correction_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, H] -> [T, E] float32
        return x.float() @ self.weight.t()

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        keys: list[tuple[str, str | None]] = [("weight", None)]
        return [*keys, ("e_score_correction_bias", None)] if self.e_score_correction_bias is not None else keys

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        target = getattr(self, attr, None) if attr in ("weight", "e_score_correction_bias") else None
        if target is None or shard is not None:
            raise ValueError(f"Unexpected router parameter {attr!r}.")
        copy_checked(target, tensor.float(), f"router {attr}")


class DeepseekMoE(nn.Module):
    """Routed experts (grouped top-k) plus ungated shared experts on every token."""

    def __init__(self, cfg: Any, dtype: torch.dtype, prefix: str, v3: bool) -> None:
        super().__init__()
        num_experts = cfg.n_routed_experts
        method = getattr(cfg, "topk_method", "noaux_tc" if v3 else "greedy")
        grouped = method in ("noaux_tc", "group_limited_greedy") and (cfg.n_group or 1) > 1
        renormalize = bool(getattr(cfg, "norm_topk_prob", False)) and v3  # HF's V2 never renormalises
        self.routing = RoutingSpec(
            cfg.num_experts_per_tok, renormalize, scoring="sigmoid" if v3 else "softmax",
            num_groups=cfg.n_group if grouped else 1, topk_groups=cfg.topk_group if grouped else 1,
            scaling=float(getattr(cfg, "routed_scaling_factor", 1.0) or 1.0))
        self.gate = GroupedRouter(num_experts, cfg.hidden_size, correction_bias=method == "noaux_tc")
        self.experts = FusedMoE(num_experts, cfg.hidden_size, cfg.moe_intermediate_size, dtype,
                                prefix=f"{prefix}.experts")
        shared = cfg.moe_intermediate_size * (cfg.n_shared_experts or 0)
        self.shared_experts = (GatedMLP(cfg.hidden_size, shared, False, dtype, prefix=f"{prefix}.shared_experts")
                               if shared else None)

    def forward(self, x: torch.Tensor, residual: torch.Tensor, norm_scale: NormScale | None = None) -> torch.Tensor:
        assert norm_scale is None
        weights, ids = self.experts.route(self.gate(x), self.routing, self.gate.e_score_correction_bias)
        residual.add_(self.experts(x, weights, ids))
        if self.shared_experts is not None:
            self.shared_experts(x, residual)
        return residual


def _mla(cfg: Any, layer_idx: int, dtype: torch.dtype, prefix: str) -> nn.Module:
    return MLAAttention(cfg, layer_idx, dtype, prefix)


def _mlp(v3: bool) -> MlpFactory:
    def build(cfg: Any, layer_idx: int, dtype: torch.dtype, prefix: str) -> nn.Module:
        if layer_idx >= (cfg.first_k_dense_replace or 0) and cfg.n_routed_experts:
            return DeepseekMoE(cfg, dtype, prefix, v3)
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, False, dtype, prefix=prefix)

    return build


_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_ROTARY_ROWS = re.compile(r"\.self_attn\.(q_proj|q_b_proj|kv_a_proj_with_mqa)\.(weight|bias)$")


class DeepseekV2ForCausalLM(DecoderForCausalLM):
    v3 = False
    # only the dense MLPs' gate and up merge (q_proj is MLA's own, not a shard of a qkv_proj)
    stacked_params: ClassVar[dict[str, tuple[str, str]]] = {
        "gate_proj": ("gate_up_proj", "gate"), "up_proj": ("gate_up_proj", "up"),
    }

    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        super().__init__(hf_config, dtype, DecoderOptions(attention=_mla, mlp=_mlp(self.v3)))

    @classmethod
    def kv_cache_layout(cls, hf_config: Any) -> KVLayout:
        return KVLayout(num_kv_heads=1, head_size=hf_config.kv_lora_rank + hf_config.qk_rope_head_dim, shared=True)

    def _interleaved(self) -> bool:
        return True if not self.v3 else bool(getattr(self.config, "rope_interleave", True))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights(self._prepared(weights))

    def _prepared(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
        """Skip layers past num_hidden_layers (V3's multi-token-prediction layer), and put the
        rotary rows of interleaved checkpoints in neox order."""
        cfg = self.config
        interleaved = self._interleaved()
        for name, tensor in weights:
            layer = _LAYER.match(name)
            if layer is not None and int(layer.group(1)) >= cfg.num_hidden_layers:
                continue
            rows = _ROTARY_ROWS.search(name)
            if interleaved and rows is not None:
                tensor = _deinterleave_rotary(tensor, rows.group(1), cfg)
            yield name, tensor


def _deinterleave_rotary(tensor: torch.Tensor, proj: str, cfg: Any) -> torch.Tensor:
    """The rotary rows (q's last qk_rope_head_dim of each head, k_pe after the latent) reordered
    even-first: interleaved pairs (x0, x1), (x2, x3) become neox halves (x0, x2, ..), (x1, x3, ..)."""
    rope = cfg.qk_rope_head_dim
    order = torch.cat([torch.arange(0, rope, 2), torch.arange(1, rope, 2)])
    if proj == "kv_a_proj_with_mqa":
        rank = cfg.kv_lora_rank
        return torch.cat([tensor[:rank], tensor[rank:][order]])
    per_head = cfg.qk_nope_head_dim + rope
    heads = tensor.view(cfg.num_attention_heads, per_head, *tensor.shape[1:])
    return torch.cat([heads[:, : cfg.qk_nope_head_dim], heads[:, cfg.qk_nope_head_dim:][:, order]], dim=1).reshape(
        tensor.shape)


class DeepseekV3ForCausalLM(DeepseekV2ForCausalLM):
    v3 = True
