"""FP8 (e4m3) weights: HF / vLLM checkpoints whose quantization_config says `"quant_method":
"fp8"`, and online quantization of an unquantized checkpoint (`quantization="fp8"`).

A checkpoint stores each quantized layer's `weight` in float8_e4m3fn [out, in] with either one
`weight_scale` per tensor (per output channel in some exports) or, with `weight_block_size`
[bn, bk], a `weight_scale_inv` per block (DeepSeek-V3, Qwen3-FP8: a multiplier despite its
name). `activation_scheme` "dynamic" quantizes activations per token at run time; "static" adds
an `input_scale` per tensor. Online quantization keeps one scale per output channel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pagedllm.quantization.base import LinearScheme, QuantizationConfig

if TYPE_CHECKING:
    from pagedllm.layers.linear_method import LinearMethod, LinearSpec
    from pagedllm.layers.moe_method import MoEMethod, MoESpec


@dataclass(frozen=True)
class Fp8Scheme(LinearScheme):
    name: ClassVar[str] = "fp8"
    block: tuple[int, int] | None = None  # [bn, bk] of the weight's block scales; None: per channel
    static_input: bool = False  # the checkpoint's input_scale quantizes activations (else dynamic)
    serialized: bool = True  # the checkpoint stores fp8; False: quantized at load from its weights
    # the checkpoint's name of the weight's scales; None: vLLM's fp8 names (weight_scale, or
    # weight_scale_inv for block scales). compressed-tensors calls both weight_scale.
    scale_name: str | None = None

    @property
    def scale_attr(self) -> str:
        """The checkpoint's name of a weight's scales."""
        return self.scale_name or ("weight_scale_inv" if self.block is not None else "weight_scale")

    def cpu_method(self, spec: LinearSpec) -> LinearMethod:
        from pagedllm.layers.fp8_linear import Fp8LinearMethod

        return Fp8LinearMethod(spec, self)

    def cuda_method(self, spec: LinearSpec, triton: bool, skinny_policy: str, pdl: bool) -> LinearMethod:
        from pagedllm.layers.fp8_linear import Fp8LinearMethod, cuda_fp8_method

        return cuda_fp8_method(spec, self, skinny_policy, pdl) if triton else Fp8LinearMethod(spec, self)

    def moe_method(self, spec: MoESpec, triton: bool) -> MoEMethod:
        from pagedllm.layers.fp8_moe import Fp8MoEMethod, Fp8TritonMoEMethod

        return Fp8TritonMoEMethod(spec, self) if triton else Fp8MoEMethod(spec, self)


@dataclass(frozen=True)
class Fp8Config(QuantizationConfig):
    name: ClassVar[str] = "fp8"
    marker_attrs: ClassVar[tuple[str, ...]] = ("weight_scale", "weight_scale_inv")
    block: tuple[int, int] | None = None
    static_input: bool = False
    serialized: bool = True

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> Fp8Config:
        scheme = config.get("activation_scheme", "dynamic")
        if scheme not in ("dynamic", "static"):
            raise ValueError(f"FP8 activation_scheme {scheme!r} is not supported (supported: dynamic, static).")
        fmt = config.get("fmt", "e4m3")
        if fmt != "e4m3":
            raise ValueError(f"FP8 format {fmt!r} is not supported (supported: e4m3).")
        block = config.get("weight_block_size")
        if block is not None:
            if len(block) != 2 or any(int(b) < 16 or int(b) & (int(b) - 1) for b in block):
                raise ValueError(f"FP8 weight_block_size {block} is not supported (two powers of two of at "
                                 "least 16, e.g. [128, 128]).")
            block = (int(block[0]), int(block[1]))
        if block is not None and scheme == "static":
            raise ValueError("FP8 block-quantized weights with a static activation scheme are not supported "
                             "(block scales go with dynamic activation scales).")
        ignored = tuple(config.get("ignored_layers") or ()) + tuple(config.get("modules_to_not_convert") or ())
        return cls(ignored=ignored, block=block, static_input=scheme == "static")

    @classmethod
    def online(cls) -> Fp8Config:
        return cls(serialized=False)

    def scheme(self) -> Fp8Scheme:
        return Fp8Scheme(self.block, self.static_input, self.serialized)
