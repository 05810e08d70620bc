"""The CPU's linear methods: the weight packed once at load for a faster GEMM than torch.matmul's.

* PanelLinearMethod (float32, where our AVX-512 kernels are built; the default): our GEMM over
  32-column panels (kernels/cpu/linear_f32.cpp), which prefetches the next panel while it
  computes, so at decode sizes the weight reads overlap the FMAs instead of stalling them as
  oneDNN's kernels do (RESULTS.md: 20-28% less time than oneDNN). The residual add of the o and
  down projections happens in its store.
* OneDnnLinearMethod (float32 or bfloat16): torch's default fp32 GEMM (MKL) runs far below the
  machine's peak on the AMD EPYC machines we are judged on; a weight reordered once into oneDNN's
  blocked layout (`mkldnn._reorder_linear_weight`) and applied with `mkldnn._linear_pointwise`
  runs 2-3.5x faster.

Both start from the unquantized [in, out] weight (so loading and norm folding are the same) and
release it after packing: the packed copy is the only one kept.
"""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.cpu import pack_linear_f32
from pagedllm.layers.linear_method import LinearSpec, UnquantizedLinearMethod

if TYPE_CHECKING:
    from pagedllm.layers.linear import Linear


def _release_plain_weight(layer: Linear) -> torch.Tensor:
    """The loaded weight as [out, in], and the layer's [in, out] parameter emptied."""
    weight = layer.weight_t.detach().t().contiguous()
    layer.weight_t = torch.nn.Parameter(layer.weight_t.new_empty(0), requires_grad=False)
    return weight


class PanelLinearMethod(UnquantizedLinearMethod):
    def __init__(self, spec: LinearSpec, kernels: ModuleType) -> None:
        """kernels: the built C++ module, with its AVX-512 parts (has_avx512())."""
        super().__init__(spec)
        self.kernels = kernels
        self.panels: torch.Tensor | None = None  # [ceil(out / 32), in, 32]

    def process_weights_after_loading(self, layer: Linear) -> None:
        self.panels = pack_linear_f32(_release_plain_weight(layer))

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        assert self.panels is not None, "process_weights_after_loading() packs the weight first"
        if x.dim() != 2 or x.stride(-1) != 1:
            return self.apply(layer, x.reshape(-1, x.shape[-1]).contiguous()).view(*x.shape[:-1], -1)
        return self.kernels.linear_f32(x, self.panels, layer.bias, self.spec.out_features, None)

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.stride(-1) != 1 or not residual.is_contiguous():
            return residual.add_(self.apply(layer, x))
        return self.kernels.linear_f32(x, self.panels, layer.bias, self.spec.out_features, residual)


class OneDnnLinearMethod(UnquantizedLinearMethod):
    def __init__(self, spec: LinearSpec) -> None:
        super().__init__(spec)
        self.packed: torch.Tensor | None = None  # oneDNN's blocked layout of [out, in]

    @staticmethod
    def available(dtype: torch.dtype) -> bool:
        return (dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))

    def process_weights_after_loading(self, layer: Linear) -> None:
        # The batch hint only picks a blocking; 64 measured as good from 1 to 2048 tokens.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(_release_plain_weight(layer), 64)

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        assert self.packed is not None, "process_weights_after_loading() packs the weight first"
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, layer.bias, "none", [], "")

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual.add_(self.apply(layer, x))
