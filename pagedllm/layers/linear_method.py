"""The linear-method seam: how a linear layer stores its weight and computes x @ W^T (+ bias).

A Linear layer (layers/linear.py) holds one LinearMethod, chosen once at construction by the
platform from the layer's LinearSpec (device, dtype, weight shape, and later its quantization;
Platform.linear_method). The method creates the weight parameters, loads checkpoint tensors into
them, may repack them after loading, and runs the GEMM with its optional epilogue: added into a
residual (the o and down projections) or SiLU-and-mul (a merged gate_up). The layer never
branches on which method it holds; a new weight format or kernel is a new method.

Life of a weight:  create_weights -> load_weight (per checkpoint tensor or shard) ->
[scale_input_rows_ (norm folding)] -> process_weights_after_loading -> apply / apply_add /
apply_gated, every step.

This module holds the interface and the unquantized method every device has: a plain [in, out]
weight through torch.matmul (cuBLAS on CUDA, MKL or oneDNN on the CPU). The CPU's packed methods
are in layers/cpu_linear.py, CUDA's small-step GEMM in layers/skinny_linear.py.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pagedllm.layers.loadable import copy_checked, new_param

if TYPE_CHECKING:
    from pagedllm.layers.linear import Linear
    from pagedllm.quantization.base import LinearScheme

NormScale = tuple[torch.Tensor, float]  # (h [T, H], eps): rows to scale by 1 / rms(h) (norm folding)
# The activation a gated method falls back to: (gate_up [T, 2I], norm_scale) -> [T, I]
GatedAct = Callable[[torch.Tensor, "NormScale | None"], torch.Tensor]


@dataclass(frozen=True)
class LinearSpec:
    """What the platform chooses a layer's method from."""

    in_features: int
    out_features: int
    bias: bool
    dtype: torch.dtype
    gated: bool = False  # a merged | gate | up | weight whose output feeds SiLU-and-mul
    # The checkpoint's quantization scheme for this weight ("gguf"), None: unquantized
    quantization: str | None = None
    # with a quantization: each shard's stored format, in output order (GGML type names: "Q4_1")
    formats: tuple[str, ...] = ()
    # A safetensors checkpoint's quantized weight (FP8, ...): how it is stored; the platform asks
    # it for the method (quantization/base.py). None: unquantized.
    scheme: LinearScheme | None = None


@dataclass(frozen=True)
class TensorAxes:
    """Along which dimension of a checkpoint tensor a weight's output and input features run, and
    how many features one entry there covers (8 packed 4-bit values, a group of G, a block of
    128); None: the tensor is the same for every part of that axis (a per-tensor scale). A
    tensor-parallel rank cuts its part out by these (layers/parallel_linear.py)."""

    out_dim: int | None = 0
    out_unit: int = 1
    in_dim: int | None = 1
    in_unit: int = 1


WHOLE = TensorAxes(None, 1, None, 1)  # a scalar: every rank's


class LinearMethod(ABC):
    """One layer's weight format and GEMM. Instances are per layer: a method may keep what it
    decided for that weight (a launch shape, a packed layout)."""

    def __init__(self, spec: LinearSpec) -> None:
        self.spec = spec

    @abstractmethod
    def create_weights(self, layer: Linear) -> None:
        """Register the layer's weight parameters (on the current default device), uninitialised."""

    @abstractmethod
    def load_weight(self, layer: Linear, tensor: torch.Tensor, start: int, size: int) -> None:
        """Copy a checkpoint tensor in HF's [size, in] layout (any dtype) into output features
        start .. start + size of the weight (a merged layer's shard, or all of it); ValueError
        on a shape mismatch."""

    def weight_attrs(self) -> tuple[str, ...]:
        """The checkpoint tensors of this weight, by the last part of their names: "weight", and
        a quantized format's scales ("weight_scale", ...)."""
        return ("weight",)

    def tensor_axes(self, attr: str, tensor: torch.Tensor) -> TensorAxes:
        """How checkpoint tensor `attr` (one of weight_attrs) lays out the output and input
        features: HF's [out, in] for the weight. Methods whose tensors differ override this."""
        if attr != "weight":
            raise ValueError(f"Unexpected linear parameter {attr!r}.")
        return TensorAxes()

    def load_tensor(self, layer: Linear, attr: str, tensor: torch.Tensor, start: int, size: int) -> None:
        """Load checkpoint tensor `attr` (one of weight_attrs) of output features start .. start +
        size. Methods with more than the weight override this."""
        if attr != "weight":
            raise ValueError(f"Unexpected linear parameter {attr!r}.")
        self.load_weight(layer, tensor, start, size)

    def scale_input_rows_(self, layer: Linear, scale: torch.Tensor) -> bool:
        """W <- W diag(scale) along the input features (scale [in], float32), before
        process_weights_after_loading: an RMSNorm folded into this projection
        (models/norm_folding.py). Returns False where this weight format cannot take it."""
        return False

    def process_weights_after_loading(self, layer: Linear) -> None:
        """Repack the loaded weight for the kernel (a no-op where it runs on the loaded layout)."""

    @abstractmethod
    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> x @ W^T + bias [..., out]."""

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual [T, out] += apply(x), in place; returns residual. Methods whose GEMM can add
        into its output override this (no output tensor, no add kernel)."""
        return residual.add_(self.apply(layer, x))

    def apply_gated(self, layer: Linear, x: torch.Tensor, act: GatedAct,
                    norm_scale: NormScale | None) -> torch.Tensor:
        """act(apply(x), norm_scale) for a | gate | up | weight: silu(gate) * up [T, I], each row
        of the product first scaled by 1 / rms(norm_scale's h) when given. Methods with a
        SiLU-and-mul epilogue override this."""
        return act(self.apply(layer, x), norm_scale)


class UnquantizedLinearMethod(LinearMethod):
    """The weight as one [in, out] tensor, `layer.weight_t`, applied with torch.matmul.

    Why [in, out]: at small batch (decode), torch.matmul(x, w_t) with w_t [in, out] beats
    F.linear(x, w [out, in]) on the CPU; HF checkpoints store [out, in], so loading transposes
    once. On CUDA it is cuBLAS, and apply_add takes the residual as the GEMM's own epilogue
    (addmm with beta = 1)."""

    def create_weights(self, layer: Linear) -> None:
        layer.weight_t = new_param(self.spec.in_features, self.spec.out_features, dtype=self.spec.dtype)

    def load_weight(self, layer: Linear, tensor: torch.Tensor, start: int, size: int) -> None:
        copy_checked(layer.weight_t[:, start:start + size], tensor.t(), "linear weight (transposed)")

    @torch.no_grad()
    def scale_input_rows_(self, layer: Linear, scale: torch.Tensor) -> bool:
        w = layer.weight_t  # [in, out]: the input features are its rows
        if w.shape[0] != self.spec.in_features:
            raise RuntimeError("Input rows are scaled before process_weights_after_loading packs the weight.")
        for start in range(0, w.shape[0], _ROWS_PER_CHUNK):  # bounded float32 temporaries
            rows = w[start:start + _ROWS_PER_CHUNK]
            rows.copy_((rows.float() * scale[start:start + _ROWS_PER_CHUNK, None]).to(w.dtype))
        return True

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        if layer.bias is None:
            return torch.matmul(x, layer.weight_t)
        if x.dim() == 2:
            return torch.addmm(layer.bias, x, layer.weight_t)
        return torch.matmul(x, layer.weight_t) + layer.bias

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if layer.bias is None and x.dim() == 2:
            return residual.addmm_(x, layer.weight_t)
        return residual.add_(self.apply(layer, x))


_ROWS_PER_CHUNK = 512  # an 8B gate_up: 512 x 28672 float32 = 56 MiB at a time
