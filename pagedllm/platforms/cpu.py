"""The CPU platform: our C++ kernels (attention, GEMM, norms, rotary, activation, sampler) where
they are built, torch ops elsewhere; memory from /proc/meminfo, float32 by default."""
from __future__ import annotations

import ctypes
import logging
import os
from types import ModuleType

import torch

from pagedllm.attention.base import AttentionBackend, AttentionBackendOptions, BackendCapabilities
from pagedllm.config import KernelConfig
from pagedllm.layers.embedding import EmbeddingMethod, EmbeddingSpec, UnquantizedEmbeddingMethod
from pagedllm.layers.layer_kernels import LayerKernels, OpImpl
from pagedllm.layers.linear_method import LinearMethod, LinearSpec, UnquantizedLinearMethod
from pagedllm.platforms.base import InverseCdfStage, Platform, backend_capabilities

logger = logging.getLogger(__name__)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class CpuPlatform(Platform):
    device_name = "cpu"

    def attention_backend_name(self, kernel_config: KernelConfig) -> str:
        return kernel_config.attention_backend or "cpu_paged"

    def make_attention_backend(self, kernel_config: KernelConfig,
                               options: AttentionBackendOptions) -> AttentionBackend:
        import dataclasses

        from pagedllm.attention.registry import create_backend

        options = dataclasses.replace(options, cpu_kernels=_cpu_kernels(kernel_config))
        return create_backend(self.attention_backend_name(kernel_config), options)

    def layer_kernels(self, kernel_config: KernelConfig,
                      attention: BackendCapabilities | None = None) -> LayerKernels:
        kernels = _cpu_kernels(kernel_config)
        avx512 = kernels if kernels is not None and kernels.has_avx512() else None
        policy = kernel_config.cpu_gemm

        def linear_method(spec: LinearSpec) -> LinearMethod:
            if spec.scheme is not None:  # a safetensors checkpoint's format (FP8: dequantized per call)
                return spec.scheme.cpu_method(spec)
            if spec.quantization is not None:
                return cpu_quantized_linear_method(spec, kernels)
            return cpu_linear_method(spec, policy, avx512)

        def embedding_method(spec: EmbeddingSpec) -> EmbeddingMethod:
            if spec.quantization is not None:
                from pagedllm.layers.gguf_weights import GGUFEmbeddingMethod

                _check_quantized(spec.quantization, (spec.format,), kernels)
                return GGUFEmbeddingMethod(spec)
            return UnquantizedEmbeddingMethod(spec)

        if attention is None:
            attention = backend_capabilities(self.attention_backend_name(kernel_config))
        return LayerKernels(ops=OpImpl.CPU if kernels is not None else OpImpl.TORCH, linear_method=linear_method,
                            attention=attention, cpu_ops=kernels, embedding_method=embedding_method)

    def inverse_cdf_stage(self, kernel_config: KernelConfig) -> InverseCdfStage | None:
        kernels = _cpu_kernels(kernel_config)
        return kernels.sample_from_logits if kernels is not None and kernels.has_avx512() else None

    def available_memory_bytes(self) -> int:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

    def default_dtype(self) -> str:
        return "float32"

    def set_num_threads(self, kernel_config: KernelConfig) -> None:
        # Every core the process may run on by default; torch's default can count hyperthreads or less.
        n = kernel_config.cpu_threads or len(os.sched_getaffinity(0))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _keep_freed_memory_in_heap()


def cpu_linear_method(spec: LinearSpec, policy: str, avx512: ModuleType | None) -> LinearMethod:
    """KernelConfig.cpu_gemm for one weight: "auto" takes our panel GEMM for float32 where its
    AVX-512 kernels are built, else oneDNN where torch has it; "onednn" oneDNN; "torch" the plain
    weight and torch.matmul."""
    from pagedllm.layers.cpu_linear import OneDnnLinearMethod, PanelLinearMethod

    if policy == "auto" and spec.dtype == torch.float32 and avx512 is not None:
        return PanelLinearMethod(spec, avx512)
    if policy in ("auto", "onednn") and OneDnnLinearMethod.available(spec.dtype):
        return OneDnnLinearMethod(spec)
    return UnquantizedLinearMethod(spec)


def cpu_quantized_linear_method(spec: LinearSpec, kernels: ModuleType | None) -> LinearMethod:
    """A weight stored quantized (a GGUF file's blocks): our C++ integer kernels over them."""
    from pagedllm.layers.gguf_weights import GGUFLinearMethod

    _check_quantized(spec.quantization, spec.formats, kernels)
    return GGUFLinearMethod(spec)


def _check_quantized(quantization: str | None, formats: tuple[str, ...], kernels: ModuleType | None) -> None:
    from pagedllm.layers.gguf_weights import QUANTIZATION

    if quantization != QUANTIZATION:
        raise ValueError(f"Quantization {quantization!r} is not supported on the CPU (supported: {QUANTIZATION}).")
    if kernels is None:
        raise ValueError("Quantized GGUF weights run on the C++ CPU kernels, which are off or could not be built "
                         "here (cpu_kernels); pass quantization='none' to dequantize them at load instead.")
    if not all(formats):
        raise ValueError("A merged layer mixes quantized and float shards in this GGUF file, which is not "
                         "supported; pass quantization='none' to dequantize it at load.")


def _cpu_kernels(kernel_config: KernelConfig) -> ModuleType | None:
    """The built C++ module, or None when turned off or not buildable here."""
    if not kernel_config.cpu_kernels:
        return None
    from pagedllm.kernels.cpu import load_cpu_kernels

    return load_cpu_kernels()


def _keep_freed_memory_in_heap() -> None:
    """Stop glibc from returning every large freed tensor to the OS.

    By default glibc serves allocations over ~128 KiB-32 MiB with fresh mmap'd pages and unmaps
    them on free, so each step's activations and gathered K/V page-fault (and get zeroed by the
    kernel) anew: measured 4x on a batch-64 decode attention here. Raising the mmap and trim
    thresholds keeps those pages in the heap for reuse, as vLLM's CPU backend gets from tcmalloc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (musl, macOS): leave the allocator alone
        logger.debug("mallopt unavailable; allocator left as is")
