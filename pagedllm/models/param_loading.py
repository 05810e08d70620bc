"""Route HF-named checkpoint tensors to our layers (merged projections included) and check that
every required weight arrived."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch
from torch import nn

from pagedllm.layers.loadable import HFWeightLoadable

logger = logging.getLogger(__name__)

# Checkpoint entries that are not weights: rotary caches some exporters save.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
# An FP8 checkpoint's calibrated K/V cache scales (vLLM's and compressed-tensors' names): the fp8
# KV cache runs with unit scales (kv_cache_dtype="fp8"), so they are read past, with a warning.
_KV_SCALE_SUFFIXES = ("self_attn.k_scale", "self_attn.v_scale", "self_attn.kv_scale", "k_proj.output_scale",
                      "v_proj.output_scale")


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


def load_named_weights(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    stacked: dict[str, tuple[str, str]],
    skip_modules: set[str],
) -> None:
    """Load every (hf_name, tensor); modules in skip_modules (e.g. a tied lm_head) are neither
    loaded nor required. Raises ValueError on unknown or missing weights, naming them."""
    modules = {name: m for name, m in model.named_modules() if isinstance(m, HFWeightLoadable)}
    missing = {(name, attr, shard) for name, m in modules.items() if name not in skip_modules
               for attr, shard in m.hf_weight_keys()}
    unexpected: list[str] = []
    kv_scales = 0
    for hf_name, tensor in weights:
        if hf_name.endswith(_IGNORED_SUFFIXES):
            continue
        if hf_name.endswith(_KV_SCALE_SUFFIXES):
            kv_scales += 1
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
    if kv_scales:
        logger.warning("The checkpoint's %d K/V cache scales are not used: an fp8 KV cache runs with unit scales.",
                       kv_scales)
    if unexpected:
        raise ValueError(f"Checkpoint has {len(unexpected)} weights this model does not know, e.g. {unexpected[:5]}.")
    if missing:
        names = sorted(_hf_name(m, a, s, stacked) for m, a, s in missing)
        raise ValueError(f"Checkpoint is missing {len(names)} required weights, e.g. {names[:5]}.")
