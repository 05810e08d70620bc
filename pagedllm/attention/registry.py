"""Attention backends by name, imported only when asked for (the Triton one imports triton)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    from pagedllm.attention.base import AttentionBackend, AttentionBackendOptions

BACKENDS: LazyRegistry[type[AttentionBackend]] = LazyRegistry("attention backend", {
    "torch": "pagedllm.attention.torch_ref:TorchAttentionBackend",
    "cpu_paged": "pagedllm.attention.cpu_paged:CpuPagedAttentionBackend",
    "triton": "pagedllm.attention.triton_paged:TritonPagedAttentionBackend",
})


def register_backend(name: str, target: str) -> None:
    """Add a backend as "module:Class" (e.g. a device kernel landing later)."""
    BACKENDS.register(name, target)


def supported_backends() -> list[str]:
    return BACKENDS.names()


def get_backend_class(name: str) -> type[AttentionBackend]:
    """The backend class registered under `name`."""
    return BACKENDS.get(name)


def create_backend(name: str, options: AttentionBackendOptions | None = None) -> AttentionBackend:
    """An instance of backend `name`, ready to go into a ForwardContext (one per worker)."""
    return get_backend_class(name)(options)
