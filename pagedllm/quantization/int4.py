"""INT4 weight-only checkpoints (W4A16): AWQ (`"quant_method": "awq"`, GEMM packing) and GPTQ
(`"quant_method": "gptq"`), 4 bits in groups of input features with a scale and a zero point
each. Their packings differ; each layer's tensors are unpacked at load and repacked once into
the layout the kernels read (kernels/quant_reference.py, layers/int4_linear.py).

AWQ: `qweight` int32 [in, out / 8] (8 columns a word, in AWQ's interleaved order), `qzeros`
int32 [in / G, out / 8] (same packing), `scales` [in / G, out].
GPTQ: `qweight` int32 [in / 8, out] (8 rows a word), `qzeros` int32 [in / G, out / 8] (stored
minus one, GPTQ's v1 convention), `scales` [in / G, out], `g_idx` [in] (each input feature's
group: with desc_act=false it is k // G; an act-order checkpoint's permutes the features, whose rows
are then sorted by group at load and the activations gathered alike, layers/int4_linear.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pagedllm.quantization.base import LinearScheme, QuantizationConfig

if TYPE_CHECKING:
    from pagedllm.layers.linear_method import LinearMethod, LinearSpec
    from pagedllm.layers.moe_method import MoEMethod, MoESpec

INT4_FORMATS = ("awq", "gptq", "pack-quantized")  # the last: compressed-tensors (quantization/compressed_tensors.py)


@dataclass(frozen=True)
class Int4Scheme(LinearScheme):
    name: ClassVar[str] = "int4"
    format: str = "awq"  # one of INT4_FORMATS: the checkpoint's tensors and packing
    group_size: int = 128  # -1: one group of all input features (per output channel)
    symmetric: bool = False  # GPTQ sym: zero points of 8 (still stored)

    def cpu_method(self, spec: LinearSpec) -> LinearMethod:
        from pagedllm.layers.int4_linear import Int4LinearMethod

        return Int4LinearMethod(spec, self)

    def cuda_method(self, spec: LinearSpec, triton: bool, skinny_policy: str, pdl: bool) -> LinearMethod:
        from pagedllm.layers.int4_linear import Int4LinearMethod, cuda_int4_method

        return cuda_int4_method(spec, self, skinny_policy, pdl) if triton else Int4LinearMethod(spec, self)

    def moe_method(self, spec: MoESpec, triton: bool) -> MoEMethod:
        from pagedllm.layers.int4_moe import Int4MoEMethod, Int4TritonMoEMethod

        return Int4TritonMoEMethod(spec, self) if triton else Int4MoEMethod(spec, self)


def _check_bits_and_group(method: str, config: dict[str, Any]) -> int:
    bits = config.get("bits", config.get("w_bit", 4))
    if bits != 4:
        raise ValueError(f"{method.upper()} with {bits}-bit weights is not supported (supported: 4 bits).")
    group = int(config.get("group_size", config.get("q_group_size", 128)))
    if group <= 0 or group % 16:
        raise ValueError(f"{method.upper()} group_size {group} is not supported (supported: multiples of 16, e.g. "
                         "128; per-channel -1 is not).")
    return group


@dataclass(frozen=True)
class AwqConfig(QuantizationConfig):
    name: ClassVar[str] = "awq"
    marker_attrs: ClassVar[tuple[str, ...]] = ("qweight",)
    group_size: int = 128

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> AwqConfig:
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm":
            raise ValueError(f"AWQ version {version!r} is not supported (supported: gemm).")
        if not config.get("zero_point", True):
            raise ValueError("AWQ without zero points is not supported (supported: zero_point true).")
        return cls(ignored=tuple(config.get("modules_to_not_convert") or ()),
                   group_size=_check_bits_and_group("awq", config))

    def scheme(self) -> Int4Scheme:
        return Int4Scheme("awq", self.group_size)


@dataclass(frozen=True)
class GptqConfig(QuantizationConfig):
    name: ClassVar[str] = "gptq"
    marker_attrs: ClassVar[tuple[str, ...]] = ("qweight",)
    group_size: int = 128
    symmetric: bool = True

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> GptqConfig:
        fmt = str(config.get("checkpoint_format", "gptq")).lower()
        if fmt != "gptq":
            raise ValueError(f"GPTQ checkpoint_format {fmt!r} is not supported (supported: gptq).")
        return cls(ignored=tuple(config.get("modules_to_not_convert") or ()),
                   group_size=_check_bits_and_group("gptq", config), symmetric=bool(config.get("sym", True)))

    def scheme(self) -> Int4Scheme:
        return Int4Scheme("gptq", self.group_size, self.symmetric)
