"""Route HF-named checkpoint tensors to our layers (merged projections included) and check that
every required weight arrived."""
from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

from pagedllm.layers.attention import Attention
from pagedllm.layers.loadable import HFWeightLoadable
from pagedllm.layers.pipeline import OtherStageModule

# Checkpoint entries that are not weights: rotary caches some exporters save.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
# An FP8 checkpoint's calibrated K/V cache scales (vLLM's and compressed-tensors' names, and the
# older AutoFP8 ones): which of (k_scale, v_scale) each sets. The layer's attention keeps them; an
# fp8 KV cache applies them (kv_cache_dtype="fp8"), any other ignores them.
_KV_SCALES = {".k_scale": (0,), ".v_scale": (1,), ".kv_scale": (0, 1), ".k_proj.output_scale": (0,),
              ".v_proj.output_scale": (1,)}


_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)$")


def _split_stacked(module_name: str, stacked: dict[str, tuple[str, str]]) -> tuple[str, str | None]:
    """"...self_attn.k_proj" -> ("...self_attn.qkv_proj", "k"); an expert's
    "...mlp.experts.3.up_proj" -> ("...mlp.experts", "3.up_proj") (the stacked experts, FusedMoE);
    other names pass through."""
    expert = _EXPERT.match(module_name)
    if expert is not None:
        return expert.group(1), f"{expert.group(2)}.{expert.group(3)}"
    parent, _, leaf = module_name.rpartition(".")
    if leaf in stacked:
        merged, shard = stacked[leaf]
        return f"{parent}.{merged}" if parent else merged, shard
    return module_name, None


def _hf_name(module_name: str, attr: str, shard: str | None, stacked: dict[str, tuple[str, str]]) -> str:
    if shard is not None and module_name.endswith(".experts"):
        return f"{module_name}.{shard}.{attr}"
    if shard is not None:
        parent, _, merged = module_name.rpartition(".")
        leaf = next(hf for hf, (m, s) in stacked.items() if m == merged and s == shard)
        module_name = f"{parent}.{leaf}" if parent else leaf
    return f"{module_name}.{attr}"


def _load_kv_scale(hf_name: str, tensor: torch.Tensor, attentions: dict[str, Attention]) -> bool:
    """Whether hf_name is a K/V cache scale, taken by the attention of its layer ("...self_attn")."""
    for suffix, which in _KV_SCALES.items():
        if hf_name.endswith(suffix):
            parent = hf_name[: -len(suffix)]
            attn = attentions.get(parent)
            if attn is None:
                return False  # not an attention's: let the loader name it
            scales = list(attn.kv_scales)
            for i in which:
                scales[i] = float(tensor.float().max())
            attn.kv_scales = (scales[0], scales[1])
            return True
    return False


def load_named_weights(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    stacked: dict[str, tuple[str, str]],
    skip_modules: set[str],
) -> None:
    """Load every (hf_name, tensor); modules in skip_modules (e.g. a tied lm_head) are neither
    loaded nor required. Raises ValueError on unknown or missing weights, naming them."""
    modules = {name: m for name, m in model.named_modules() if isinstance(m, HFWeightLoadable)}
    # what other pipeline stages hold: their tensors are not this rank's (layers/pipeline.py)
    elsewhere = tuple(name + "." for name, m in model.named_modules() if isinstance(m, OtherStageModule))
    missing = {(name, attr, shard) for name, m in modules.items() if name not in skip_modules
               for attr, shard in m.hf_weight_keys()}
    unexpected: list[str] = []
    attentions = {name.rpartition(".")[0]: m for name, m in model.named_modules() if isinstance(m, Attention)}
    for hf_name, tensor in weights:
        if hf_name.endswith(_IGNORED_SUFFIXES) or (elsewhere and hf_name.startswith(elsewhere)):
            continue
        if _load_kv_scale(hf_name, tensor, attentions):
            continue
        module_name, _, attr = hf_name.rpartition(".")
        if module_name in skip_modules:
            continue
        module_name, shard = _split_stacked(module_name, stacked)
        module = modules.get(module_name)
        if module is None:
            unexpected.append(hf_name)
            continue
        module.load_hf_weight(attr, tensor, shard)
        missing.discard((module_name, attr, shard))
    if unexpected:
        raise ValueError(f"Checkpoint has {len(unexpected)} weights this model does not know, e.g. {unexpected[:5]}.")
    if missing:
        names = sorted(_hf_name(m, a, s, stacked) for m, a, s in missing)
        raise ValueError(f"Checkpoint is missing {len(names)} required weights, e.g. {names[:5]}.")
