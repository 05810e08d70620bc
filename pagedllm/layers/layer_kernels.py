"""What a model's layers run, chosen once when the model is built.

The platform resolves the engine's KernelConfig for its device into a LayerKernels
(Platform.layer_kernels) and the loader builds the model inside `use_layer_kernels(...)`. Each
layer reads it in its constructor and keeps what applies to it: the implementation its op runs
(torch, our C++ kernels, Triton), its linear method, what the attention backend fuses. No layer
decides per call which kernel family runs, and none reads the environment.

Outside that scope (a test that builds a layer directly) layers get the platform's defaults for
the current default device: `default_layer_kernels()`.
"""
from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from pagedllm.attention.base import BackendCapabilities
from pagedllm.scoped import Scoped

if TYPE_CHECKING:
    from pagedllm.layers.embedding import EmbeddingMethod, EmbeddingSpec
    from pagedllm.layers.linear_method import LinearMethod, LinearSpec
    from pagedllm.layers.moe_method import MoEMethod, MoESpec
    from pagedllm.quantization.base import LinearScheme, QuantizationConfig


class OpImpl(enum.Enum):
    """The implementation family of the elementwise ops (norms, activation, rotary)."""

    TORCH = "torch"  # torch ops: the reference, and the path anywhere else
    CPU = "cpu"  # our C++ kernels (kernels/cpu), where they apply to the tensor's dtype and layout
    TRITON = "triton"  # our Triton kernels (kernels/triton), CUDA


@dataclass(frozen=True)
class LayerKernels:
    ops: OpImpl
    # a LinearSpec -> the method that layer's weight uses (the platform's choice)
    linear_method: Callable[[LinearSpec], LinearMethod]
    # what the attention backend fuses: the attention layers hand that work over
    attention: BackendCapabilities = field(default_factory=BackendCapabilities)
    # the built C++ module when ops is CPU
    cpu_ops: ModuleType | None = None
    # fold the decoder layers' norm weights into their projections (models/norm_folding.py)
    fold_norms: bool = False
    # an EmbeddingSpec -> the method of the token embedding (None: the unquantized one)
    embedding_method: Callable[[EmbeddingSpec], EmbeddingMethod] | None = None
    # a MoESpec -> the method of a mixture-of-experts layer's experts (None: grouped torch ops)
    moe_method: Callable[[MoESpec], MoEMethod] | None = None
    # The checkpoint's weights that come quantized: HF weight name -> stored format (GGML type
    # names, "Q4_1"), under `quantization` ("gguf"); the loader fills it from the file's header.
    quantization: str | None = None
    weight_formats: Mapping[str, str] = field(default_factory=dict)
    # A safetensors checkpoint's quantization (FP8, ...), or online quantization: which layers it
    # covers and their scheme (quantization/base.py); None: unquantized
    quant_config: QuantizationConfig | None = None

    def scheme_of(self, prefixes: list[str]) -> LinearScheme | None:
        """The quantization scheme of a linear layer with these HF names (its shards), or None."""
        return None if self.quant_config is None else self.quant_config.scheme_for(prefixes)

    def formats_of(self, weight_names: list[str]) -> tuple[str | None, tuple[str, ...]]:
        """(quantization, per-weight formats) for a layer whose weights have these HF names:
        (None, ()) when none of them is stored quantized."""
        formats = tuple(self.weight_formats.get(name, "") for name in weight_names)
        return (self.quantization, formats) if any(formats) else (None, ())


_current: Scoped[LayerKernels] = Scoped()


def use_layer_kernels(kernels: LayerKernels) -> contextlib.AbstractContextManager[LayerKernels]:
    """Layers built inside this scope take `kernels`."""
    return _current.use(kernels)


def current_layer_kernels() -> LayerKernels:
    """The scope's kernels, or the default platform's for the current default device."""
    return _current.value or default_layer_kernels()


def default_layer_kernels() -> LayerKernels:
    import torch

    return _default_for(torch.get_default_device().type)


@functools.cache
def _default_for(device_type: str) -> LayerKernels:
    from pagedllm.config import KernelConfig
    from pagedllm.platforms.base import get_platform

    return get_platform(device_type).layer_kernels(KernelConfig())


class KernelOp:
    """A mixin for layers with several implementations of one op: `forward_native` (torch, the
    reference), and where they exist `forward_cpu` (C++) and `forward_triton`. `bind_forward()`,
    called from the layer's constructor, points `forward` at the one the layer kernels choose, so
    a call costs nothing to dispatch. A chosen implementation still falls back to the native one
    for inputs its kernel does not take (a dtype or layout)."""

    # The built C++ module, for forward_cpu: set where the kernels have one (ops CPU), the only
    # place forward_cpu is bound.
    cpu_ops: ModuleType

    def bind_forward(self) -> LayerKernels:
        kernels = current_layer_kernels()
        name = {OpImpl.TRITON: "forward_triton", OpImpl.CPU: "forward_cpu"}.get(kernels.ops, "forward_native")
        self.forward = getattr(self, name, None) or self.forward_native  # type: ignore[attr-defined]
        if kernels.cpu_ops is not None:
            self.cpu_ops = kernels.cpu_ops
        return kernels
