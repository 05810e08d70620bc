"""EAGLE and EAGLE-3 draft heads for Llama-family targets (speculative decoding's `eagle` and
`eagle3` methods, spec_decode/eagle.py), loading the published checkpoints' layouts.

A head is one decoder layer that reads the target's features beside the token embeddings. Entry p
of its own (paged) KV cache takes the token at p + 1 and a feature of position p: the target's for
positions the target has computed, the head's own output for the positions it drafts ahead.

EAGLE (yuhuili/EAGLE-*): the feature is the target's last hidden state (after its final norm).
    h = fc(cat(embed(x[p+1]), f[p]))            fc.weight [H, 2H]
    h = layer(h)                                 layers.0.*, without the input norm
    out = h  -> the next feature, and logits through the target's lm_head

EAGLE-3 (yuhuili/EAGLE3-*): the feature comes from three of the target's layers (their inputs),
concatenated and projected once: f = fc(cat(a, b, c)) (fc.weight [H, 3H]); then
    r = f;  x = cat(input_layernorm(embed(x[p+1])), hidden_norm(f))      [T, 2H]
    h = r + o_proj(attn(qkv(x)));  h = h + mlp(post_attention_layernorm(h))
    out = h -> the next feature;  logits = lm_head(norm(h)) over a draft vocabulary of
    draft_vocab_size tokens, draft id i being target id i + d2t[i]
The embedding (and EAGLE's lm_head) is the target's: heads are trained on the target's frozen
embedding, and a copy in the checkpoint is skipped.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from pagedllm.layers.embedding import LMHead
from pagedllm.layers.linear import Linear
from pagedllm.layers.norm import NormScale, RMSNorm
from pagedllm.models.common import (
    DecoderAttention,
    DecoderForCausalLM,
    DecoderLayer,
    DecoderOptions,
    GatedMLP,
    KVLayout,
    per_head_kv_layout,
    to_torch_dtype,
)
from pagedllm.models.param_loading import load_named_weights

_STACKED = DecoderForCausalLM.stacked_params


@runtime_checkable
class DraftHead(Protocol):
    """A draft model that reads the target's features (the worker binds the target after loading)."""

    def bind_target(self, target: DecoderForCausalLM) -> None: ...

    def combine_hidden_states(self, features: torch.Tensor) -> torch.Tensor: ...

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor: ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


def eagle3_aux_layers(draft_config: Any, target_config: Any) -> tuple[int, ...]:
    """The target layers whose inputs an EAGLE-3 head reads: the head's config may name them
    (eagle_aux_hidden_state_layer_ids, vLLM's key), else layers 2, L // 2 and L - 3 (the published
    heads' training choice)."""
    ids = getattr(draft_config, "eagle_aux_hidden_state_layer_ids", None)
    eagle_config = getattr(draft_config, "eagle_config", None)
    if ids is None and isinstance(eagle_config, dict):
        ids = eagle_config.get("eagle_aux_hidden_state_layer_ids")
    if ids is not None:
        return tuple(int(i) for i in ids)
    n = target_config.num_hidden_layers
    return (2, n // 2, n - 3)


class _NoNorm(nn.Module):
    """EAGLE's first layer reads fc's output as it is (the published heads have no input norm)."""

    def prepare(self, h: torch.Tensor) -> tuple[torch.Tensor, NormScale | None]:
        return h, None


def _strip(weights: Iterable[tuple[str, torch.Tensor]], prefix: str = "model.") -> Iterable[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        yield name.removeprefix(prefix), tensor


class EagleLlamaForCausalLM(nn.Module):
    @classmethod
    def kv_cache_layout(cls, hf_config: Any) -> KVLayout:
        """The head's one layer caches K and V per kv head, as the target's layers do."""
        return per_head_kv_layout(hf_config)

    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        super().__init__()
        self.config = hf_config
        self.dtype = to_torch_dtype(dtype)
        h = hf_config.hidden_size
        opts = DecoderOptions(mlp_bias=bool(getattr(hf_config, "mlp_bias", False)))
        self.fc = Linear(2 * h, h, bias=False, dtype=self.dtype, prefix="fc")
        self.layers = nn.ModuleList([DecoderLayer(hf_config, 0, opts, self.dtype, prefix="layers.0")])
        self.layers[0].input_layernorm = _NoNorm()
        self._target: list[DecoderForCausalLM] = []  # in a list: not a sub-module (its weights are the target's)

    def bind_target(self, target: DecoderForCausalLM) -> None:
        self._target[:] = [target]

    def combine_hidden_states(self, features: torch.Tensor) -> torch.Tensor:
        """The target's last hidden states [T, H], copied: a CUDA graph's output is rewritten by
        its next replay, and the proposer keeps them until the step's outcome is known."""
        return features.clone()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        embeds = self._target[0].model.embed_tokens(input_ids)
        h = self.fc(torch.cat([embeds, hidden], dim=-1))
        out: torch.Tensor = self.layers[0](positions, h)
        return out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._target[0].compute_logits(hidden)

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        # The published heads carry a copy of the target's embedding; the target's own is used.
        kept = ((n, t) for n, t in _strip(weights) if not n.startswith("embed_tokens."))
        load_named_weights(self, kept, _STACKED, skip_modules=set())


class _Eagle3Layer(nn.Module):
    def __init__(self, cfg: Any, dtype: torch.dtype) -> None:
        super().__init__()
        h = cfg.hidden_size
        opts = DecoderOptions(mlp_bias=bool(getattr(cfg, "mlp_bias", False)))
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.hidden_norm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.self_attn = DecoderAttention(cfg, 0, opts, dtype, prefix="midlayer.self_attn", input_size=2 * h)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.mlp = GatedMLP(h, cfg.intermediate_size, opts.mlp_bias, dtype, prefix="midlayer.mlp")

    def forward(self, positions: torch.Tensor, embeds: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        residual = hidden.clone()  # the attention and MLP add into it in place
        self.self_attn(positions, x, residual)
        self.mlp(self.post_attention_layernorm(residual), residual)
        return residual


class Eagle3LlamaForCausalLM(nn.Module):
    stacked_params: ClassVar[dict[str, tuple[str, str]]] = _STACKED
    draft_to_target: torch.Tensor  # [draft_vocab] int64

    @classmethod
    def kv_cache_layout(cls, hf_config: Any) -> KVLayout:
        """The head's one layer caches K and V per kv head, as the target's layers do."""
        return per_head_kv_layout(hf_config)

    def __init__(self, hf_config: Any, dtype: str | torch.dtype) -> None:
        super().__init__()
        self.config = hf_config
        self.dtype = to_torch_dtype(dtype)
        h = hf_config.hidden_size
        target_h = getattr(hf_config, "target_hidden_size", None) or h
        self.draft_vocab_size = getattr(hf_config, "draft_vocab_size", None) or hf_config.vocab_size
        self.vocab_size = hf_config.vocab_size
        self.fc = Linear(3 * target_h, h, bias=False, dtype=self.dtype, prefix="fc")
        self.midlayer = _Eagle3Layer(hf_config, self.dtype)
        self.norm = RMSNorm(h, hf_config.rms_norm_eps, self.dtype)
        self.lm_head = LMHead(h, self.draft_vocab_size, self.dtype, prefix="lm_head")
        # draft id -> target id: i + d2t[i] (identity when the draft's vocabulary is the target's)
        self.register_buffer("draft_to_target", torch.arange(self.draft_vocab_size), persistent=False)
        self._target: list[DecoderForCausalLM] = []

    def bind_target(self, target: DecoderForCausalLM) -> None:
        self._target[:] = [target]

    def combine_hidden_states(self, features: torch.Tensor) -> torch.Tensor:
        """The target's three layer inputs [T, 3H] -> the head's feature [T, H]."""
        out: torch.Tensor = self.fc(features)
        return out

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.midlayer(positions, self._target[0].model.embed_tokens(input_ids), hidden)
        return out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, V] over the target's vocabulary: the draft vocabulary's logits at their target ids,
        -inf elsewhere (so the sampler and the rejection rule see target ids)."""
        draft: torch.Tensor = self.lm_head(self.norm(hidden))  # [N, draft_vocab] float32
        if self.draft_vocab_size == self.vocab_size:
            return draft
        logits = torch.full((draft.shape[0], self.vocab_size), float("-inf"), dtype=draft.dtype,
                            device=draft.device)
        logits[:, self.draft_to_target] = draft
        return logits

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        rest = []
        for name, tensor in _strip(weights):
            if name == "d2t":
                self.draft_to_target.copy_(torch.arange(self.draft_vocab_size) + tensor.to(torch.int64))
            elif name == "t2d" or name.startswith("embed_tokens."):
                continue  # the target -> draft mask (d2t says the same); a copy of the target's embedding
            else:
                rest.append((name, tensor))
        load_named_weights(self, rest, _STACKED, skip_modules=set())


class HeadStep(nn.Module):
    """A head as a model of the runner's contract, forward(input_ids, positions) -> hidden, its
    features read from a persistent buffer the proposer fills first: what the CUDA graphs capture
    (worker/cuda_graphs.py, worker/piecewise_graphs.py) and what runs eagerly alike."""

    def __init__(self, head: EagleLlamaForCausalLM | Eagle3LlamaForCausalLM, max_tokens: int) -> None:
        super().__init__()
        self.head = head
        weight = next(head.parameters())
        self.features = torch.zeros(max_tokens, head.config.hidden_size, dtype=weight.dtype, device=weight.device)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(input_ids, positions, self.features[: input_ids.shape[0]])
        return out
