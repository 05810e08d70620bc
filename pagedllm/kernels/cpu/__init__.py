"""CPU kernels in C++, built on first use with torch's extension builder and cached on disk.

They are optional: with no compiler the torch reference path runs instead, with one warning;
KernelConfig.cpu_kernels=False (the platform's choice, platforms/cpu.py) never loads them. torch caches
the build under ~/.cache/torch_extensions keyed by the source, so only the first engine on a machine
pays the ~20-40 s compile.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from types import ModuleType
from typing import TypedDict

import torch

logger = logging.getLogger(__name__)
_HERE = os.path.dirname(os.path.abspath(__file__))
# The decode attention's source on its own: benchmarks/bench_cpu_attention.py builds another
# version of it beside the rest for A/B runs.
DECODE_ATTENTION_SOURCE = os.path.join(_HERE, "decode_attention.cpp")
SOURCES = [os.path.join(_HERE, name) for name in (
    "bindings.cpp", "decode_attention.cpp", "varlen_attention.cpp", "kv_cache_write.cpp", "linear_f32.cpp",
    "rms_norm.cpp", "rotary.cpp", "activation.cpp", "sampling.cpp", "quant_repack.cpp", "quant_gemm.cpp",
    "quant_gemm_scalar.cpp", "quant_gemm_avx2.cpp", "quant_gemm_avx512.cpp")]


def _headers_digest() -> str:
    """torch's extension cache keys on the sources and flags only: the headers' hash goes into the
    flags so that editing a header rebuilds the module too."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".h"):
            with open(os.path.join(_HERE, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


class BuildFlags(TypedDict):
    extra_cflags: list[str]
    extra_ldflags: list[str]


BUILD_FLAGS: BuildFlags = {
    "extra_cflags": ["-O3", "-march=native", "-fopenmp", f"-DPAGEDLLM_HEADERS={_headers_digest()}"],
    "extra_ldflags": ["-fopenmp"],
}


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The compiled module, or None when the kernels cannot be built here."""
    try:
        from torch.utils.cpp_extension import load

        return load(name="pagedllm_cpu_kernels", sources=SOURCES, verbose=False, **BUILD_FLAGS)
    except Exception as e:  # no compiler, no ninja, unsupported platform: fall back, loudly
        logger.warning("CPU kernels unavailable (%s); using the torch attention path.", e)
        return None


PANEL = 32  # output columns per panel of linear_f32.cpp


def pack_linear_f32(weight: torch.Tensor) -> torch.Tensor:
    """A float32 [out, in] weight as linear_f32's panels: [ceil(out / 32), in, 32], each panel the
    next 32 output columns k-major, zero-padded past `out`."""
    out_features, in_features = weight.shape
    num_panels = -(-out_features // PANEL)
    padded = weight.new_zeros(num_panels * PANEL, in_features)
    padded[:out_features] = weight
    return padded.view(num_panels, PANEL, in_features).transpose(1, 2).contiguous()


@functools.cache
def avx512_kernels() -> ModuleType | None:
    """The kernels if their AVX-512 parts (float32 GEMM, varlen attention, sampling) were built
    here, else None."""
    kernels = load_cpu_kernels()
    return kernels if kernels is not None and kernels.has_avx512() else None
