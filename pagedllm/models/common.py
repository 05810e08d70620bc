"""Building blocks shared by the decoder-only architectures (llama, mistral, qwen2, qwen3, and
with a mixture of experts as the MLP, mixtral and the Qwen MoEs: models/moe.py).

An architecture file picks options (biases, q/k norm) and inherits the rest; the module tree
mirrors HF names (model.layers.N.self_attn...) so weights load by name, with q/k/v and gate/up
merged into one matmul each.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pagedllm.distributed.parallel_state import current_pipeline_stage
from pagedllm.layers.activation import SiluAndMul
from pagedllm.layers.attention import Attention
from pagedllm.layers.embedding import LMHead, VocabEmbedding
from pagedllm.layers.norm import NormScale, RMSNorm
from pagedllm.layers.parallel_linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from pagedllm.layers.pipeline import AbsentLayer, PipelineInput, PipelineLogits, PipelineOutput
from pagedllm.layers.rotary import RotaryEmbedding, rope_config_from_hf
from pagedllm.models.param_loading import load_named_weights

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def to_torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unsupported dtype {dtype!r}; choose one of {list(_DTYPES)}.")
    return _DTYPES[dtype]


# (cfg, layer_idx, dtype, prefix) -> a layer's MLP: forward(x, residual, norm_scale) adds its output
# into residual and returns it, like GatedMLP (a mixture of experts: models/moe.py)
MlpFactory = Callable[[Any, int, torch.dtype, str], nn.Module]
# (cfg, layer_idx, dtype, prefix) -> a layer's attention block: forward(positions, x, residual,
# norm_scale) adds its output into residual, like DecoderAttention (MLA: models/deepseek.py)
AttentionFactory = Callable[[Any, int, torch.dtype, str], nn.Module]


@dataclass(frozen=True)
class KVLayout:
    """What one layer's paged cache holds per token: num_kv_heads rows of head_size for K and as
    many for V, or (shared) one set of rows that are K and V at once (MLA's latent)."""

    num_kv_heads: int
    head_size: int
    shared: bool = False

    def per_rank(self, tensor_parallel_size: int) -> KVLayout:
        """What one tensor-parallel rank's cache holds: its KV heads (one, replicated, when there
        are fewer than ranks; layers/parallel_linear.py). MLA's latent is whole on every rank."""
        if self.shared or tensor_parallel_size == 1:
            return self
        return dataclasses.replace(self, num_kv_heads=max(1, self.num_kv_heads // tensor_parallel_size))


@dataclass(frozen=True)
class DecoderOptions:
    """What differs between the architectures."""

    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # qwen3: RMSNorm over each head of q and k before rotary
    mlp: MlpFactory | None = None  # each layer's MLP; None: GatedMLP of intermediate_size
    attention: AttentionFactory | None = None  # each layer's attention; None: DecoderAttention


def per_head_kv_layout(cfg: Any) -> KVLayout:
    """K and V rows of head_dim for each kv head: every attention but MLA's."""
    return KVLayout(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, head_dim_of(cfg))


def head_dim_of(cfg: Any) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


class DecoderAttention(nn.Module):
    def __init__(self, cfg: Any, layer_idx: int, opts: DecoderOptions, dtype: torch.dtype, prefix: str = "",
                 input_size: int | None = None) -> None:
        """prefix: the HF name of this block ("model.layers.3.self_attn"), which the checkpoint's
        per-weight formats are looked up by (a quantized GGUF's types). input_size: the width q/k/v
        are projected from (default hidden_size; an EAGLE-3 head reads two hidden states side by side)."""
        super().__init__()
        self.head_dim = head_dim_of(cfg)
        total_heads = cfg.num_attention_heads
        self.qkv_proj = QKVParallelLinear(input_size or cfg.hidden_size, self.head_dim, total_heads,
                                          getattr(cfg, "num_key_value_heads", None) or total_heads,
                                          bias=opts.qkv_bias, dtype=dtype, prefix=prefix)
        # this rank's heads (all of them on one device)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.o_proj = RowParallelLinear(total_heads * self.head_dim, cfg.hidden_size, bias=opts.o_bias, dtype=dtype,
                                        prefix=f"{prefix}.o_proj")
        rotary_dim = int(self.head_dim * getattr(cfg, "partial_rotary_factor", 1.0))
        self.rotary_emb = RotaryEmbedding(self.head_dim, rotary_dim, cfg.max_position_embeddings,
                                          rope_config_from_hf(cfg))
        self.attn = Attention(self.num_heads, self.head_dim, self.num_kv_heads, self.head_dim ** -0.5, layer_idx,
                              rotary_dim=rotary_dim)
        if opts.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, dtype)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, dtype)
        self.qk_norm = opts.qk_norm

    def forward(self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor,  # [T], [T, H] x2
                norm_scale: NormScale | None = None) -> torch.Tensor:
        """residual += the attention block's output of x, in place (o_proj's epilogue); returns
        residual. `norm_scale`: the input norm folded into qkv_proj, see Attention.forward."""
        q, k, v = self.qkv_proj.split(self.qkv_proj(x))
        qk_norm = (self.q_norm, self.k_norm) if self.qk_norm else None
        out = self.attn(q, k, v, rotary=(positions, self.rotary_emb), qk_norm=qk_norm, norm_scale=norm_scale)
        return self.o_proj.accumulate_(residual, out)


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool, dtype: torch.dtype,
                 prefix: str = "") -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden_size,
                                                       {"gate": intermediate_size, "up": intermediate_size},
                                                       bias=bias, dtype=dtype, gated=True,
                                                       prefixes={s: f"{prefix}.{s}_proj" for s in ("gate", "up")})
        self.act = SiluAndMul()
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size, bias=bias, dtype=dtype,
                                           prefix=f"{prefix}.down_proj")

    def forward(self, x: torch.Tensor, residual: torch.Tensor,  # [T, H] each
                norm_scale: NormScale | None = None) -> torch.Tensor:
        """residual += the MLP's output of x, in place (down_proj's epilogue); returns residual.
        `norm_scale`: the post-attention norm folded into gate_up_proj, see SiluAndMul."""
        act = self.gate_up_proj.forward_gated(x, self.act, norm_scale)
        return self.down_proj.accumulate_(residual, act)

    def output(self, x: torch.Tensor) -> torch.Tensor:  # [T, H] -> [T, H]
        """The MLP's output of x on its own (a gated shared expert scales it before adding it)."""
        return self.down_proj(self.gate_up_proj.forward_gated(x, self.act))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Any, layer_idx: int, opts: DecoderOptions, dtype: torch.dtype, prefix: str = "") -> None:
        super().__init__()
        # RMSNorm, or after norm folding (models/norm_folding.py) its FoldedRMSNorm
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = (opts.attention(cfg, layer_idx, dtype, f"{prefix}.self_attn") if opts.attention is not None
                          else DecoderAttention(cfg, layer_idx, opts, dtype, prefix=f"{prefix}.self_attn"))
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = (opts.mlp(cfg, layer_idx, dtype, f"{prefix}.mlp") if opts.mlp is not None
                    else GatedMLP(cfg.hidden_size, cfg.intermediate_size, opts.mlp_bias, dtype, prefix=f"{prefix}.mlp"))

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The layer on the hidden state [T, H] (the residual stream), updated in place: the o and
        down projections add into it as their GEMM's epilogue. Each norm says what its projection
        reads: the normalised rows, or (folded) the hidden state itself with a row scale for the
        consumer of the projection."""
        x, norm_scale = self.input_layernorm.prepare(hidden)
        self.self_attn(positions, x, hidden, norm_scale)
        x, norm_scale = self.post_attention_layernorm.prepare(hidden)
        self.mlp(x, hidden, norm_scale)
        return hidden


class DecoderModel(nn.Module):
    def __init__(self, cfg: Any, opts: DecoderOptions, dtype: torch.dtype, prefix: str = "model") -> None:
        """Under pipeline parallelism only the current stage's layers are built; the rest of the
        tree holds stand-ins that pass the hidden states between stages (layers/pipeline.py)."""
        super().__init__()
        stage = current_pipeline_stage()
        start, end = stage.layer_range(cfg.num_hidden_layers)
        self.embed_tokens = (VocabEmbedding(cfg.vocab_size, cfg.hidden_size, dtype, prefix=f"{prefix}.embed_tokens")
                             if stage.is_first else PipelineInput(cfg.hidden_size, dtype))
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, opts, dtype, prefix=f"{prefix}.layers.{i}")
                                    if start <= i < end else AbsentLayer() for i in range(cfg.num_hidden_layers))
        self.held_layers = list(self.layers)[start:end]  # this stage's, in order
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype) if stage.is_last else PipelineOutput()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # a new tensor: the layers update it in place
        for layer in self.held_layers:
            hidden = layer(positions, hidden)
        return self.norm(hidden)


class DecoderForCausalLM(nn.Module):
    """The model contract (docs/DESIGN.md): ModelCls(hf_config, dtype); load_weights(...);
    forward(input_ids [T], positions [T]) -> hidden [T, H]; compute_logits(hidden [N, H]) -> [N, V]."""

    # HF sub-module name -> (our merged module name, shard)
    stacked_params: ClassVar[dict[str, tuple[str, str]]] = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", "gate"), "up_proj": ("gate_up_proj", "up"),
    }

    def __init__(self, hf_config: Any, dtype: str | torch.dtype, opts: DecoderOptions) -> None:
        super().__init__()
        self.config = hf_config
        self.dtype = to_torch_dtype(dtype)
        self.tie_word_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False))
        self.model = DecoderModel(hf_config, opts, self.dtype)
        self.lm_head: nn.Module = (LMHead(hf_config.hidden_size, hf_config.vocab_size, self.dtype, prefix="lm_head")
                                   if current_pipeline_stage().is_last else PipelineLogits(hf_config.vocab_size))

    @classmethod
    def kv_cache_layout(cls, hf_config: Any) -> KVLayout:
        """The paged cache's rows per token and layer (worker/kv_cache.py sizes and allocates it)."""
        return per_head_kv_layout(hf_config)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, H] -> [N, V] float32
        return self.lm_head(hidden)

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; raises ValueError naming any required weight that is missing."""
        tied, head, embedding = self.tie_word_embeddings, self.lm_head, self.model.embed_tokens
        if tied and isinstance(head, LMHead) and not isinstance(embedding, VocabEmbedding):
            # the last of several pipeline stages: its head loads the table itself
            weights = (("lm_head.weight" if name == "model.embed_tokens.weight" else name, t) for name, t in weights)
            tied = False
        load_named_weights(self, weights, self.stacked_params, skip_modules={"lm_head"} if tied else set())
        if tied and isinstance(head, LMHead) and isinstance(embedding, VocabEmbedding):
            head.tie_to(embedding)
