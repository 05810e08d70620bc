"""Linear layers storing the weight transposed, [in, out] contiguous, and packed for a fast CPU GEMM.

Why [in, out]: without packing, torch.matmul(x, w_t) with w_t [in, out] beats F.linear(x, w
[out, in]) at small batch (the decode case): 4.2 ms vs 7.4 ms for a 49152x576 LM head at batch 1
on the project's 2-core machine. HF checkpoints store [out, in]; the loaders transpose once.

CPU packing (PAGEDLLM_CPU_GEMM picks it):
* "pagedllm" (float32 with AVX-512, the default): our GEMM over 32-column panels
  (kernels/cpu/linear_f32.cpp), which prefetches the next panel while it computes: 20% less time
  than oneDNN for a decode step's projections at batch 64, 28% less at batch 1 (RESULTS.md);
* "onednn" (and bfloat16): torch's default fp32 GEMM (MKL) runs far below the machine's peak on
  the AMD EPYC machines we are judged on; a weight reordered once into oneDNN's blocked layout
  (`mkldnn._reorder_linear_weight`) and applied with `mkldnn._linear_pointwise` is 2-3.5x faster;
* "default": torch.matmul on the plain weight, for A/B runs.
After packing, the plain weight is released: the packed copy is the only one kept.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.cpu import avx512_kernels, pack_linear_f32
from pagedllm.kernels.triton import triton_applies
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param

if TYPE_CHECKING:
    from pagedllm.kernels.triton.skinny_gemm import GemvConfig


class Linear(HFWeightLoadable):
    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_t = new_param(in_features, out_features, dtype=dtype)  # [in, out]
        self.bias = new_param(out_features, dtype=dtype) if bias else None  # [out]
        self.packed_weight: torch.Tensor | None = None  # oneDNN blocked layout of [out, in]
        self.panels: torch.Tensor | None = None  # linear_f32's [ceil(out / 32), in, 32]

    def pack_for_cpu(self) -> bool:
        """Pack the weight for the CPU GEMM that PAGEDLLM_CPU_GEMM picks; returns False where no
        packing applies (not a CPU weight, or "default")."""
        mode = cpu_gemm_mode(self.weight_t)
        if mode is None:
            return False
        weight = self.weight_t.detach().t().contiguous()  # [out, in]
        if mode == "pagedllm":
            self.panels = pack_linear_f32(weight)
        else:
            # The batch hint only picks a blocking; 64 measured as good from 1 to 2048 tokens.
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, 64)
        self.weight_t = torch.nn.Parameter(self.weight_t.new_empty(0), requires_grad=False)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, in] -> [T, out]
        if self.panels is not None:
            kernels = avx512_kernels()
            assert kernels is not None  # panels exist only where the kernel was built
            if x.dim() != 2 or x.stride(-1) != 1:
                return self.forward(x.reshape(-1, x.shape[-1]).contiguous()).view(*x.shape[:-1], -1)
            return kernels.linear_f32(x, self.panels, self.bias, self.out_features)
        if self.packed_weight is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")
        if self.bias is None:
            cfg = self.skinny_config(x)
            if cfg is not None:
                from pagedllm.kernels.triton.skinny_gemm import skinny_gemm

                return skinny_gemm(x, self.weight_t, cfg)
            return torch.matmul(x, self.weight_t)
        if x.dim() == 2:
            return torch.addmm(self.bias, x, self.weight_t)
        return torch.matmul(x, self.weight_t) + self.bias

    def accumulate_(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual += self(x), in place; returns residual. A plain weight takes it as the GEMM's
        own epilogue (beta = 1): no output tensor and no add kernel."""
        if self.panels is None and self.packed_weight is None and self.bias is None and x.dim() == 2:
            cfg = self.skinny_config(x)
            if cfg is not None and residual.stride(-1) == 1:
                from pagedllm.kernels.triton.skinny_gemm import skinny_gemm

                return skinny_gemm(x, self.weight_t, cfg, out=residual, accumulate=True)
            return residual.addmm_(x, self.weight_t)
        return residual.add_(self(x))

    def skinny_config(self, x: torch.Tensor, gated: bool = False) -> GemvConfig | None:
        """The launch shape when the Triton GEMM for steps of at most 16 rows takes x @ weight_t
        (kernels/triton/skinny_gemm.py, PAGEDLLM_TRITON_GEMV; gated: with the SiLU-and-mul
        epilogue), else None: cuBLAS (or the CPU GEMMs) does."""
        if x.dim() != 2 or x.shape[0] > 16 or not triton_applies(x):  # cheap tests first: every call asks
            return None
        if self.bias is not None or self.panels is not None or self.packed_weight is not None:
            return None
        from pagedllm.kernels.triton.skinny_gemm import config_for

        return config_for(x, self.weight_t, gated)

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [("weight", None)] + ([("bias", None)] if self.bias is not None else [])

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        assert shard is None, f"{type(self).__name__} has no shards"
        if attr == "weight":
            copy_checked(self.weight_t, tensor.t(), "linear weight (transposed)")
        elif attr == "bias" and self.bias is not None:
            copy_checked(self.bias, tensor, "linear bias")
        else:
            raise ValueError(f"Unexpected linear parameter {attr!r}.")


class MergedLinear(Linear):
    """Several projections of the same input in one matmul, e.g. QKV or gate+up.

    Output columns are the shards in order: | shard 0 | shard 1 | ... |. Each shard is loaded from
    its own HF tensor (q_proj, k_proj, ...), so checkpoints need no conversion.
    """

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool, dtype: torch.dtype) -> None:
        super().__init__(in_features, sum(shard_sizes.values()), bias, dtype)
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, size in shard_sizes.items():
            self.shard_offsets[name] = (start, size)
            start += size

    def split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """Split a forward output [T, out] into the shards' views, in order."""
        sizes = [size for _, size in self.shard_offsets.values()]
        return list(out.split(sizes, dim=-1))

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        attrs = ["weight"] + (["bias"] if self.bias is not None else [])
        return [(attr, shard) for shard in self.shard_offsets for attr in attrs]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if shard not in self.shard_offsets:
            raise ValueError(f"Unknown shard {shard!r}; this layer has {list(self.shard_offsets)}.")
        start, size = self.shard_offsets[shard]
        if attr == "weight":
            copy_checked(self.weight_t[:, start:start + size], tensor.t(), f"{shard} weight (transposed)")
        elif attr == "bias" and self.bias is not None:
            copy_checked(self.bias[start:start + size], tensor, f"{shard} bias")
        else:
            raise ValueError(f"Unexpected parameter {attr!r} for shard {shard!r}.")


def cpu_gemm_mode(weight: torch.Tensor) -> str | None:
    """How a CPU weight is packed: "pagedllm" (float32, where our AVX-512 GEMM is built),
    "onednn" (float32/bfloat16 when torch has oneDNN), or None (plain torch.matmul). Set
    PAGEDLLM_CPU_GEMM=onednn or =default to measure against those."""
    wanted = os.environ.get("PAGEDLLM_CPU_GEMM", "pagedllm")
    if weight.device.type != "cpu" or wanted == "default":
        return None
    if wanted == "pagedllm" and weight.dtype == torch.float32 and avx512_kernels() is not None:
        return "pagedllm"
    onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    return "onednn" if onednn and weight.dtype in (torch.float32, torch.bfloat16) else None
