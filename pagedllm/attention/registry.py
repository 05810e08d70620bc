"""Attention backends by name, imported only when asked for, and the per-device default."""
from __future__ import annotations

import importlib

from pagedllm.attention.base import AttentionBackend

# name -> "module:Class"; importing lazily keeps optional kernels (triton...) off the CPU path.
_BACKENDS: dict[str, str] = {
    "torch": "pagedllm.attention.torch_ref:TorchAttentionBackend",
    "cpu_paged": "pagedllm.attention.cpu_paged:CpuPagedAttentionBackend",
    "triton": "pagedllm.attention.triton_paged:TritonPagedAttentionBackend",
}

# device type -> backend name.
_DEVICE_DEFAULTS: dict[str, str] = {
    "cpu": "torch",
    "cuda": "triton",
}


def register_backend(name: str, target: str) -> None:
    """Add a backend as "module:Class" (e.g. a device kernel landing later)."""
    _BACKENDS[name] = target


def supported_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend_class(name: str) -> type[AttentionBackend]:
    """The backend class registered under `name`."""
    if name not in _BACKENDS:
        raise ValueError(f"Unknown attention backend {name!r}; supported: {supported_backends()}.")
    module_name, class_name = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_attn_backend(device: str, name: str | None = None) -> AttentionBackend:
    """A backend instance for `device` ("cpu", "cuda", "cuda:1"...), or the one named explicitly,
    ready to go into a ForwardContext (backends are stateless; one per worker is enough)."""
    if name is None:
        device_type = device.split(":")[0]
        if device_type not in _DEVICE_DEFAULTS:
            raise ValueError(f"No attention backend for device {device!r}; known: {sorted(_DEVICE_DEFAULTS)}.")
        name = _DEVICE_DEFAULTS[device_type]
    return get_backend_class(name)()
