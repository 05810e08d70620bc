"""compressed-tensors checkpoints (`"quant_method": "compressed-tensors"`, written by llm-compressor:
the RedHatAI / neuralmagic FP8 and W4A16 models). Its config has `config_groups`, each a scheme
with `targets` (layer types or "re:" patterns), and an `ignore` list; the formats run here:

* "pack-quantized", weights int4 (symmetric or not, per group or per channel), no activation
  quantization (W4A16): `weight_packed` int32 [out, in / 8] (8 values a word, in order, offset
  by 8), `weight_scale` [out, in / G], `weight_zero_point` int32 [out / 8, in / G] when asymmetric,
  `weight_shape`. It runs on the INT4 methods (quantization/int4.py).
* "float-quantized" (or "naive-quantized"), weights fp8 per tensor, channel or block, activations
  fp8 dynamic per token (or static per tensor): `weight` fp8, `weight_scale` ([1], [out, 1] or
  per block), `input_scale`. It runs on the FP8 methods (quantization/fp8.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pagedllm.quantization.base import LinearScheme, QuantizationConfig
from pagedllm.quantization.fp8 import Fp8Scheme
from pagedllm.quantization.int4 import Int4Scheme

_FP8_FORMATS = ("float-quantized", "naive-quantized")
_SUPPORTED = "pack-quantized int4 weights (W4A16) and float-quantized fp8 weights and activations"


@dataclass(frozen=True)
class CompressedTensorsConfig(QuantizationConfig):
    name: ClassVar[str] = "compressed-tensors"
    marker_attrs: ClassVar[tuple[str, ...]] = ("weight_packed", "weight_scale")
    # (targets, scheme) per config group, in the config's order
    groups: tuple[tuple[tuple[str, ...], LinearScheme], ...] = field(default=())

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> CompressedTensorsConfig:
        fmt = config.get("format", "dense")
        groups = []
        for name, group in (config.get("config_groups") or {}).items():
            targets = tuple(group.get("targets") or ())
            groups.append((targets, _scheme(name, group, group.get("format") or fmt)))
        if not groups:
            raise ValueError("This compressed-tensors checkpoint has no quantization config_groups.")
        return cls(ignored=tuple(config.get("ignore") or ()), groups=tuple(groups))

    def scheme(self) -> LinearScheme:
        return self.groups[0][1]

    def scheme_for(self, prefixes: list[str]) -> LinearScheme | None:
        if super().scheme_for(prefixes) is None:
            return None
        schemes = {id(s): s for s in (self._group_of(p) for p in prefixes if p)}
        if len(schemes) != 1:
            raise ValueError(f"The shards of {prefixes} fall in different compressed-tensors config groups, which "
                             "is not supported.")
        return next(iter(schemes.values()))

    def _group_of(self, prefix: str) -> LinearScheme:
        for targets, scheme in self.groups:
            if any(_targets(prefix, t) for t in targets):
                return scheme
        raise ValueError(f"The checkpoint quantizes {prefix}, which no compressed-tensors config group targets.")


def _targets(prefix: str, target: str) -> bool:
    """A group's target: a layer type ("Linear": every linear layer), a "re:" pattern or a name."""
    if target == "Linear":
        return True
    if target.startswith("re:"):
        return re.fullmatch(target[3:], prefix) is not None or re.match(target[3:], prefix) is not None
    return prefix == target or prefix.endswith("." + target)


def _scheme(name: str, group: dict[str, Any], fmt: str) -> LinearScheme:
    weights = group.get("weights") or {}
    acts = group.get("input_activations")
    bits, kind = weights.get("num_bits"), weights.get("type", "int")
    strategy = weights.get("strategy")
    if fmt == "pack-quantized" and kind == "int" and bits == 4 and not acts:
        if weights.get("actorder") not in (None, False, "static"):
            raise ValueError(f"compressed-tensors group {name!r}: activation ordering {weights['actorder']!r} is not "
                             "supported (supported: none, static).")
        if strategy == "group":
            group_size = int(weights.get("group_size") or 0)
            if group_size <= 0 or group_size % 16:
                raise ValueError(f"compressed-tensors group {name!r}: group_size {group_size} is not supported "
                                 "(multiples of 16).")
        elif strategy == "channel":
            group_size = -1
        else:
            raise ValueError(f"compressed-tensors group {name!r}: int4 strategy {strategy!r} is not supported "
                             "(supported: group, channel).")
        return Int4Scheme("pack-quantized", group_size, bool(weights.get("symmetric", True)))
    if fmt in _FP8_FORMATS and kind == "float" and bits == 8:
        block = None
        if strategy == "block":
            structure = weights.get("block_structure") or []
            if len(structure) != 2:
                raise ValueError(f"compressed-tensors group {name!r}: block strategy without a [rows, cols] "
                                 "block_structure.")
            block = (int(structure[0]), int(structure[1]))
        elif strategy not in ("tensor", "channel"):
            raise ValueError(f"compressed-tensors group {name!r}: fp8 weight strategy {strategy!r} is not supported "
                             "(supported: tensor, channel, block).")
        static = False
        if acts:
            if acts.get("type") != "float" or acts.get("num_bits") != 8:
                raise ValueError(f"compressed-tensors group {name!r}: fp8 weights with {acts.get('type')} "
                                 f"{acts.get('num_bits')}-bit activations are not supported.")
            static = not acts.get("dynamic", False)
            if static and acts.get("strategy") != "tensor":
                raise ValueError(f"compressed-tensors group {name!r}: static activation scales per "
                                 f"{acts.get('strategy')} are not supported (supported: tensor).")
        return Fp8Scheme(block, static, True, scale_name="weight_scale")
    raise ValueError(f"compressed-tensors group {name!r}: format {fmt!r} with {kind} {bits}-bit weights"
                     f"{' and quantized activations' if acts else ''} is not supported (supported: {_SUPPORTED}).")
