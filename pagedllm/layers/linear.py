"""Linear layers: a bias, the checkpoint-name plumbing, and a linear method that owns the weight.

Which GEMM runs (our AVX-512 panels, oneDNN, torch/cuBLAS, the Triton skinny GEMM, later the
quantized ones) is the method's business, chosen once when the layer is built
(layers/linear_method.py); this file has no branch on it.
"""
from __future__ import annotations

import torch
from torch import nn

from pagedllm.layers.layer_kernels import current_layer_kernels
from pagedllm.layers.linear_method import GatedAct, LinearSpec, NormScale
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param


class Linear(HFWeightLoadable):
    # The unquantized methods' weight, [in, out]; other methods register their own parameters.
    weight_t: nn.Parameter
    # Quantized methods' (layers/fp8_linear.py): the checkpoint's [out, in] weight and its scales
    weight: nn.Parameter
    weight_scale: nn.Parameter
    input_scale: nn.Parameter
    # (layers/int4_linear.py): packed int4 [in / 8, out], per-group scales and zeros, and their
    # unpacked staging while loading
    qweight: nn.Parameter
    scales: nn.Parameter
    zeros: nn.Parameter
    weight_q: nn.Parameter
    weight_zeros: nn.Parameter
    weight_scales: nn.Parameter
    act_order: torch.Tensor  # an act-order GPTQ layer's input permutation (int4_linear.py)

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                 *, gated: bool = False, prefix: str = "", quantizable: bool = True) -> None:
        """gated: the output is | gate | up | for SiLU-and-mul (forward_gated). prefix: the HF
        name of this layer ("model.layers.0.mlp.down_proj"), by which the checkpoint's format of
        its weight is looked up (a quantized GGUF); "" for layers built outside a model.
        quantizable False: never a safetensors quantization's (a mixture of experts' router, which
        checkpoints keep in full precision and online quantization leaves so)."""
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = new_param(out_features, dtype=dtype) if bias else None  # [out]
        kernels = current_layer_kernels()
        prefixes = self._weight_prefixes(prefix)
        quantization, formats = kernels.formats_of([f"{p}.weight" for p in prefixes if p])
        spec = LinearSpec(in_features, out_features, bias, dtype, gated, quantization, formats,
                          kernels.scheme_of(prefixes) if quantizable else None)
        self.method = kernels.linear_method(spec)
        self.method.create_weights(self)

    def _weight_prefixes(self, prefix: str) -> list[str]:
        """The HF names of the checkpoint tensors this layer's weight is made of, in output order."""
        return [prefix]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, in] -> [T, out]
        return self.method.apply(self, x)

    def accumulate_(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual [T, out] += self(x), in place; returns residual."""
        return self.method.apply_add(self, x, residual)

    def forward_gated(self, x: torch.Tensor, act: GatedAct, norm_scale: NormScale | None = None) -> torch.Tensor:
        """silu(gate) * up of self(x) ([T, out / 2]) through `act` or the method's fused epilogue."""
        return self.method.apply_gated(self, x, act, norm_scale)

    def process_weights_after_loading(self) -> None:
        self.method.process_weights_after_loading(self)

    def _attrs(self) -> tuple[str, ...]:
        return self.method.weight_attrs() + (("bias",) if self.bias is not None else ())

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [(attr, None) for attr in self._attrs()]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        assert shard is None, f"{type(self).__name__} has no shards"
        if attr == "bias" and self.bias is not None:
            copy_checked(self.bias, tensor, "linear bias")
        else:
            self.method.load_tensor(self, attr, tensor, 0, self.out_features)


class MergedLinear(Linear):
    """Several projections of the same input in one matmul, e.g. QKV or gate+up.

    Output columns are the shards in order: | shard 0 | shard 1 | ... |. Each shard is loaded from
    its own HF tensor (q_proj, k_proj, ...), so checkpoints need no conversion.
    """

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool, dtype: torch.dtype,
                 *, gated: bool = False, prefixes: dict[str, str] | None = None) -> None:
        """prefixes: each shard's HF layer name ("...self_attn.q_proj"), see Linear."""
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, size in shard_sizes.items():
            self.shard_offsets[name] = (start, size)
            start += size
        self._shard_prefixes = [(prefixes or {}).get(name, "") for name in shard_sizes]
        super().__init__(in_features, start, bias, dtype, gated=gated)

    def _weight_prefixes(self, prefix: str) -> list[str]:
        return self._shard_prefixes

    def split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """Split a forward output [T, out] into the shards' views, in order."""
        sizes = [size for _, size in self.shard_offsets.values()]
        return list(out.split(sizes, dim=-1))

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [(attr, shard) for shard in self.shard_offsets for attr in self._attrs()]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if shard not in self.shard_offsets:
            raise ValueError(f"Unknown shard {shard!r}; this layer has {list(self.shard_offsets)}.")
        start, size = self.shard_offsets[shard]
        if attr == "bias" and self.bias is not None:
            copy_checked(self.bias[start:start + size], tensor, f"{shard} bias")
        else:
            self.method.load_tensor(self, attr, tensor, start, size)
