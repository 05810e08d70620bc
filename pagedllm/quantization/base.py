"""The interface of a checkpoint quantization format: its config, and the per-layer scheme the
platforms turn into a linear method.

A QuantizationConfig is parsed once from the checkpoint's `quantization_config` (or made for
online quantization of an unquantized checkpoint, `quantization="fp8"`). It decides which linear
layers are quantized: those named in the checkpoint with the format's scale tensors (read from
the safetensors headers before the model is built, `with_layers`), less the ones the config
ignores; without a checkpoint (online, or dummy weights) every linear layer but the LM head.
"""
from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pagedllm.layers.linear_method import LinearMethod, LinearSpec
    from pagedllm.layers.moe_method import MoEMethod, MoESpec


class LinearScheme(ABC):
    """How one linear layer's weight is stored. Frozen dataclasses: LinearSpec holds one."""

    name: ClassVar[str]

    @abstractmethod
    def cpu_method(self, spec: LinearSpec) -> LinearMethod:
        """The method that runs this weight on the CPU (or a clear ValueError)."""

    @abstractmethod
    def cuda_method(self, spec: LinearSpec, triton: bool, skinny_policy: str, pdl: bool) -> LinearMethod:
        """The method on CUDA: with Triton where `triton`, the small-step kernel under the
        KernelConfig's skinny_gemm policy, launched with PDL where `pdl`."""

    def moe_method(self, spec: MoESpec, triton: bool) -> MoEMethod:
        """The method of a mixture-of-experts layer whose experts are stored this way (fused
        Triton kernels where `triton`), or a clear ValueError."""
        raise ValueError(f"{self.name} quantization of mixture-of-experts layers is not supported yet (supported: "
                         "fp8, int4); run an unquantized checkpoint of this model.")


@dataclass(frozen=True)
class QuantizationConfig(ABC):
    """A checkpoint's quantization: the layers it covers and their scheme."""

    name: ClassVar[str]
    # Checkpoint tensor names (last part) whose presence marks a layer as quantized
    marker_attrs: ClassVar[tuple[str, ...]]
    # Layer names (or "re:<regex>") the config leaves unquantized
    ignored: tuple[str, ...] = ()
    # The quantized layers named by the checkpoint; None: every linear layer but the LM head
    layers: frozenset[str] | None = None

    @classmethod
    @abstractmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> QuantizationConfig:
        """Parse a checkpoint's quantization_config; ValueError naming what is unsupported."""

    @classmethod
    def online(cls) -> QuantizationConfig:
        """The config that quantizes an unquantized checkpoint's weights at load."""
        raise ValueError(f"quantization={cls.name!r} needs a checkpoint quantized in that format; this one is "
                         "unquantized (formats quantized at load: fp8).")

    @abstractmethod
    def scheme(self) -> LinearScheme:
        """The scheme of every layer this config quantizes."""

    def with_layers(self, tensor_names: Iterable[str]) -> QuantizationConfig:
        """This config restricted to the layers the checkpoint stores quantized."""
        suffixes = tuple(f".{attr}" for attr in self.marker_attrs)
        layers = frozenset(n.rpartition(".")[0] for n in tensor_names if n.endswith(suffixes))
        return dataclasses.replace(self, layers=layers)

    def scheme_for(self, prefixes: list[str]) -> LinearScheme | None:
        """The scheme of the layer whose checkpoint weights are `prefixes` (a merged layer's
        shards, in order), or None where it is not quantized. Shards must agree."""
        quantized = [self.quantizes(p) for p in prefixes if p]
        if not quantized or not any(quantized):
            return None
        if not all(quantized):
            raise ValueError(f"The checkpoint quantizes some of {prefixes} and not others; a merged layer's "
                             "shards must agree.")
        return self.scheme()

    def quantizes(self, prefix: str) -> bool:
        """Whether the layer (or module) named `prefix` holds quantized weights."""
        if any(_matches(prefix, pattern) for pattern in self.ignored):
            return False
        if self.layers is not None:
            return prefix in self.layers or any(layer.startswith(prefix + ".") for layer in self.layers)
        return prefix.rpartition(".")[2] != "lm_head"


def _matches(prefix: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], prefix) is not None
    return prefix == pattern or prefix.startswith(pattern + ".") or prefix.endswith("." + pattern)
