"""GGUF quantized weights on the CPU: the C++ kernels' Python face (quant_*.cpp).

A weight [N, K] of a GGML block type (GGUF keeps it as uint8 [N, K / block * type_size]) is
repacked once at load by `repack` into the kernels' layout (quant_formats.h: panels of 16 rows,
column-interleaved, the same bytes as the file), then

    linear(x, w)        x [M, K] float32 @ dequant(w)^T (+ bias), or added into `residual`
    embedding(ids, w)   the rows `ids` dequantized (a quantized embedding table)
    dequantize(w)       all of it in float32, bit-equal to gguf-py's `dequantize`

`linear` quantizes x to int8 per 32 values (scale amax / 127) and takes integer dot products
(AVX-512 VNNI, AVX2 or scalar: `isas()`; all give bit-equal results, and a row's result does not
depend on M or its place in the batch). Its error against float64 `dequant(w) @ x` comes from the
activation rounding only: each activation is off by at most half a step (amax / 254 of its block).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from pagedllm.kernels.cpu import load_cpu_kernels


@dataclass(frozen=True)
class QuantType:
    """A GGML block type the kernels take: `block_size` weights per `type_size` bytes."""

    ggml_type: int
    name: str
    block_size: int
    type_size: int


# GGML type ids as in ggml.h / gguf.GGMLQuantizationType.
SUPPORTED_TYPES: dict[int, QuantType] = {t.ggml_type: t for t in (
    QuantType(2, "Q4_0", 32, 18),
    QuantType(3, "Q4_1", 32, 20),
    QuantType(6, "Q5_0", 32, 22),
    QuantType(7, "Q5_1", 32, 24),
    QuantType(8, "Q8_0", 32, 34),
    QuantType(10, "Q2_K", 256, 84),
    QuantType(11, "Q3_K", 256, 110),
    QuantType(12, "Q4_K", 256, 144),
    QuantType(13, "Q5_K", 256, 176),
    QuantType(14, "Q6_K", 256, 210),
)}
PANEL = 16  # weight rows per panel of the packed layout


def quant_type(ggml_type: int) -> QuantType:
    """The supported type of this id, else a ValueError naming the supported ones."""
    t = SUPPORTED_TYPES.get(int(ggml_type))
    if t is None:
        names = ", ".join(t.name for t in SUPPORTED_TYPES.values())
        raise ValueError(f"GGML type {ggml_type} is not supported by the quantized CPU kernels (supported: {names})")
    return t


@dataclass(frozen=True)
class PackedWeight:
    """A weight [rows, cols] repacked for the kernels: `data` uint8 [ceil(rows / 16), ...]."""

    data: torch.Tensor
    qtype: QuantType
    rows: int
    cols: int

    @property
    def num_bytes(self) -> int:
        return self.data.numel()


def _kernels() -> ModuleType:
    kernels = load_cpu_kernels()
    if kernels is None:
        raise RuntimeError("the C++ CPU kernels could not be built on this machine")
    return kernels


def _check_cols(qtype: QuantType, cols: int) -> None:
    if cols <= 0 or cols % qtype.block_size:
        raise ValueError(f"{qtype.name} rows of {cols} values: must be a positive multiple of {qtype.block_size}")


def repack(raw: torch.Tensor, ggml_type: int, rows: int, cols: int) -> PackedWeight:
    """GGUF blocks, uint8 [rows, cols / block_size * type_size] (as gguf.GGUFReader gives a
    quantized tensor's data), to the kernels' packed layout."""
    qtype = quant_type(ggml_type)
    _check_cols(qtype, cols)
    row_bytes = cols // qtype.block_size * qtype.type_size
    if raw.dtype != torch.uint8 or raw.numel() != rows * row_bytes:
        raise ValueError(f"{qtype.name} [{rows}, {cols}] needs uint8 data of {rows} x {row_bytes} bytes, "
                         f"got {raw.dtype} with {raw.numel()}")
    data = _kernels().quant_repack(raw.contiguous(), qtype.ggml_type, rows, cols)
    return PackedWeight(data, qtype, rows, cols)


def linear(x: torch.Tensor, weight: PackedWeight, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """x float32 [M, K] (rows may be strided) @ dequant(weight)^T + bias -> float32 [M, N]; with
    `residual` [M, N] contiguous, the result is added into it in place and it is returned."""
    return _kernels().quant_linear(x, weight.data, weight.qtype.ggml_type, weight.rows, bias, residual)


def embedding(ids: torch.Tensor, weight: PackedWeight) -> torch.Tensor:
    """int64 ids [T] -> float32 [T, cols]: their rows of the weight, dequantized."""
    return _kernels().quant_embedding(ids, weight.data, weight.qtype.ggml_type, weight.rows, weight.cols)


def dequantize(weight: PackedWeight) -> torch.Tensor:
    """The whole weight as float32 [rows, cols], bit-equal to gguf-py's dequantize."""
    return _kernels().quant_dequantize(weight.data, weight.qtype.ggml_type, weight.rows, weight.cols)


def isas() -> list[str]:
    """The ISA paths of `linear` that this build and CPU have, best first ("scalar" always)."""
    return list(_kernels().quant_isas())


def current_isa() -> str:
    """The ISA path `linear` runs now."""
    return str(_kernels().quant_isa())


def set_isa(name: str) -> str:
    """Run `linear` on this ISA path ("auto", "avx512vnni", "avx2" or "scalar") from now on, in
    this process (for tests and benchmarks); returns the previous setting."""
    return str(_kernels().quant_set_isa(name))
