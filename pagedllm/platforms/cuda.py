"""The CUDA platform: the Triton paged-attention backend (torch's when Triton is missing), memory
from the driver, bfloat16 by default."""
from __future__ import annotations

import logging
import os

import torch

from pagedllm.platforms.base import Platform

logger = logging.getLogger(__name__)

# Set to a registered backend name ("torch", "triton") to override the platform's choice.
BACKEND_ENV = "PAGEDLLM_ATTENTION_BACKEND"


class CudaPlatform(Platform):
    device_name = "cuda"

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise ModuleNotFoundError("CUDA is not available to torch (no GPU, or a CPU-only build)")

    def attention_backend_name(self) -> str:
        forced = os.environ.get(BACKEND_ENV)
        if forced:
            return forced
        return "triton" if _backend_importable("triton") else "torch"

    def available_memory_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info()
        return int(free)

    def total_memory_bytes(self) -> int:
        _, total = torch.cuda.mem_get_info()
        return int(total)

    def default_dtype(self) -> str:
        # bf16 has fp32's exponent range (no overflow in activations) and runs on the tensor
        # cores; cards before Ampere lack it and get fp16.
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def supports_cuda_graphs(self) -> bool:
        return True

    def default_scheduler_limits(self) -> tuple[int, int]:
        # As vLLM does for cards of 70 GiB or more (H100, H200): larger steps keep them busy. On an
        # H100, 1000 x 512/128 tokens of the Qwen3-0.6B shape ran at 82k tok/s with (256, 2048),
        # 114k with (512, 4096) and 118k with (512, 8192) (benchmarks/RESULTS.md).
        # The device's properties, not mem_get_info: the API server's process resolves this too,
        # and mem_get_info would give it a CUDA context (518 MiB of the card, measured on an H100).
        if torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory >= 70 * 2**30:
            return 512, 8192
        return super().default_scheduler_limits()


def _backend_importable(name: str) -> bool:
    """Whether attention backend `name` is registered and its module imports (Triton present)."""
    from pagedllm.attention.registry import get_backend_class

    try:
        get_backend_class(name)
    except (ValueError, ImportError) as e:
        logger.info("Attention backend %r unavailable (%s); using 'torch'.", name, e)
        return False
    return True
