"""The CUDA platform: Triton kernels (attention, norms, rotary, activation, the sampler's stage,
the skinny GEMM) where Triton is on and importable, torch ops and cuBLAS otherwise; memory from
the driver, bfloat16 by default."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch

from pagedllm.attention.base import AttentionBackend, AttentionBackendOptions, BackendCapabilities
from pagedllm.config import KernelConfig
from pagedllm.kernels.triton import triton_available
from pagedllm.layers.layer_kernels import LayerKernels, OpImpl
from pagedllm.layers.linear_method import LinearMethod, LinearSpec, UnquantizedLinearMethod
from pagedllm.layers.moe_method import MoEMethod, MoESpec
from pagedllm.platforms.base import (
    InverseCdfStage,
    Platform,
    RejectionStage,
    TokenMaskStage,
    backend_capabilities,
)

logger = logging.getLogger(__name__)


class CudaPlatform(Platform):
    device_name = "cuda"

    @classmethod
    def check_available(cls) -> None:
        if not torch.cuda.is_available():
            raise ModuleNotFoundError("CUDA is not available to torch (no GPU, or a CPU-only build)")

    def attention_backend_name(self, kernel_config: KernelConfig) -> str:
        if kernel_config.attention_backend is not None:
            return kernel_config.attention_backend
        if not _use_triton(kernel_config):
            return "torch"
        return "triton" if _backend_importable("triton") else "torch"

    def make_attention_backend(self, kernel_config: KernelConfig,
                               options: AttentionBackendOptions) -> AttentionBackend:
        from pagedllm.attention.registry import create_backend

        options = dataclasses.replace(options, rotary_in_decode=kernel_config.decode_rotary,
                                      pdl=_pdl_chain(kernel_config))
        return create_backend(self.attention_backend_name(kernel_config), options)

    def layer_kernels(self, kernel_config: KernelConfig,
                      attention: BackendCapabilities | None = None) -> LayerKernels:
        if attention is None:
            attention = backend_capabilities(self.attention_backend_name(kernel_config))
        triton = _use_triton(kernel_config)
        policy = kernel_config.skinny_gemm if triton else "off"
        pdl = kernel_config.gemm_pdl

        def linear_method(spec: LinearSpec) -> LinearMethod:
            if spec.scheme is not None:  # a quantized checkpoint's format, or online quantization
                return spec.scheme.cuda_method(spec, triton, policy, pdl)
            return cuda_linear_method(spec, policy, pdl)

        return LayerKernels(ops=OpImpl.TRITON if triton else OpImpl.TORCH, linear_method=linear_method,
                            attention=attention, moe_method=_moe_method(triton),
                            fold_norms=kernel_config.fold_norms and triton and attention.fuses_norm_scale)

    def inverse_cdf_stage(self, kernel_config: KernelConfig) -> InverseCdfStage | None:
        if not (_use_triton(kernel_config) and kernel_config.triton_sampler):
            return None
        from pagedllm.kernels.triton.sampling import sample_from_logits

        return sample_from_logits

    def rejection_stage(self, kernel_config: KernelConfig) -> RejectionStage | None:
        if not _use_triton(kernel_config):
            return None
        from pagedllm.kernels.triton.rejection import rejection_sample

        return rejection_sample

    def token_mask_stage(self, kernel_config: KernelConfig) -> TokenMaskStage:
        if not _use_triton(kernel_config):
            return super().token_mask_stage(kernel_config)
        from pagedllm.kernels.triton.token_bitmask import apply_token_bitmask_triton_

        return apply_token_bitmask_triton_

    def available_memory_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info()
        return int(free)

    def total_memory_bytes(self) -> int:
        _, total = torch.cuda.mem_get_info()
        return int(total)

    def device_count(self) -> int | None:
        return torch.cuda.device_count()

    def default_dtype(self) -> str:
        # bf16 has fp32's exponent range (no overflow in activations) and runs on the tensor
        # cores; cards before Ampere lack it and get fp16.
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def supports_cuda_graphs(self) -> bool:
        return True

    def default_scheduler_limits(self) -> tuple[int, int]:
        # As vLLM does for cards of 70 GiB or more (H100, H200): larger steps keep them busy
        # (RESULTS.md: the Qwen3-0.6B shape's throughput rose 40% from (256, 2048) to (512, 8192)).
        # The device's properties, not mem_get_info: the API server's process resolves this too,
        # and mem_get_info would give it a CUDA context (over 500 MiB of the card).
        if torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory >= 70 * 2**30:
            return 512, 8192
        return super().default_scheduler_limits()


def cuda_linear_method(spec: LinearSpec, policy: str, pdl: bool) -> LinearMethod:
    """The skinny-GEMM method where KernelConfig.skinny_gemm takes this weight (a launch shape
    exists for it), else the unquantized one (cuBLAS)."""
    if spec.quantization is not None:
        raise ValueError(f"Quantized {spec.quantization} weights are not supported on CUDA yet; pass "
                         "quantization='none' to dequantize them at load.")
    if spec.bias or not triton_available():
        return UnquantizedLinearMethod(spec)
    from pagedllm.kernels.triton.skinny_gemm import num_sms, skinny_config
    from pagedllm.layers.skinny_linear import SkinnyGemmLinearMethod

    # Built under `with torch.device("cuda")` (the loader): that card's SM count sizes the launch.
    sms = num_sms(torch.get_default_device())
    config = skinny_config(spec.in_features, spec.out_features, spec.dtype, policy, sms, spec.gated)
    return UnquantizedLinearMethod(spec) if config is None else SkinnyGemmLinearMethod(spec, config, pdl)


def _moe_method(triton: bool) -> Callable[[MoESpec], MoEMethod]:
    """The fused Triton experts (a quantized format's where the experts are stored quantized): no
    host sync, so MoE layers run inside CUDA graphs. Without Triton, the grouped torch method
    (which reads its routing on the host: run such a model with enforce_eager)."""
    from pagedllm.layers.moe_method import default_moe_method

    return lambda spec: default_moe_method(spec, triton)


def _use_triton(kernel_config: KernelConfig) -> bool:
    return kernel_config.triton and triton_available()


def _pdl_chain(kernel_config: KernelConfig) -> bool:
    """Whether decode attention joins the GEMMs' PDL chain: only where the GEMMs after it are
    launched as programmatic dependents, i.e. where the skinny GEMM may run, with PDL."""
    return _use_triton(kernel_config) and kernel_config.skinny_gemm != "off" and kernel_config.gemm_pdl


def _backend_importable(name: str) -> bool:
    """Whether attention backend `name` is registered and its module imports (Triton present)."""
    from pagedllm.attention.registry import get_backend_class

    try:
        get_backend_class(name)
    except (ValueError, ImportError) as e:
        logger.info("Attention backend %r unavailable (%s); using 'torch'.", name, e)
        return False
    return True
