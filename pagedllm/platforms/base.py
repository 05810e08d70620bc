"""A Platform says what a device can do: its attention backend, memory, and default dtype."""
from __future__ import annotations

from abc import ABC, abstractmethod


class Platform(ABC):
    device_name: str = "base"

    @abstractmethod
    def attention_backend_name(self) -> str:
        """Name of the attention backend in attention/registry.py for this device."""

    @abstractmethod
    def available_memory_bytes(self) -> int:
        """Memory the KV cache may take a fraction of (free memory now, weights already loaded)."""

    @abstractmethod
    def default_dtype(self) -> str:
        """The dtype used when the user asks for 'auto'."""

    def set_num_threads(self) -> None:
        """Configure intra-op threading for this device; CPU only."""

    def total_memory_bytes(self) -> int:
        """All the device memory, the base of gpu_memory_utilization on devices that profile."""
        return self.available_memory_bytes()

    def supports_cuda_graphs(self) -> bool:
        """Whether decode steps may be captured and replayed as CUDA graphs."""
        return False

    def default_scheduler_limits(self) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens) when the user sets neither."""
        return 256, 2048


_PLATFORMS = {
    "cpu": "pagedllm.platforms.cpu:CpuPlatform",
    "cuda": "pagedllm.platforms.cuda:CudaPlatform",
}


def get_platform(device: str = "auto") -> Platform:
    """Choose the platform at run time; 'auto' picks CUDA when a GPU is visible."""
    import importlib

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in _PLATFORMS:
        raise ValueError(f"Unknown device {device!r}; supported: {sorted(_PLATFORMS)}.")
    module, cls = _PLATFORMS[device].split(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except ModuleNotFoundError as e:
        raise ValueError(f"Device {device!r} is not supported in this build: {e}") from e
