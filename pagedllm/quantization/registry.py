"""Checkpoint quantization formats by vLLM's `quantization` name, and which one a checkpoint
uses (its config's `quantization_config.quant_method`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pagedllm.registry import LazyRegistry

if TYPE_CHECKING:
    from pagedllm.quantization.base import QuantizationConfig

QUANTIZATION_CONFIGS: LazyRegistry[type[QuantizationConfig]] = LazyRegistry("quantization format", {
    "fp8": "pagedllm.quantization.fp8:Fp8Config",
    "awq": "pagedllm.quantization.int4:AwqConfig",
    "gptq": "pagedllm.quantization.int4:GptqConfig",
    "compressed-tensors": "pagedllm.quantization.compressed_tensors:CompressedTensorsConfig",
})


def checkpoint_quantization(hf_config: Any) -> str | None:
    """The quantization format named by a HF config's quantization_config, or None; ValueError
    for a format pagedllm does not run, naming those it does."""
    qc = _quantization_dict(hf_config)
    if qc is None:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in QUANTIZATION_CONFIGS:
        raise ValueError(f"This checkpoint's quantization {method!r} is not supported (supported checkpoint "
                         f"formats: {', '.join(QUANTIZATION_CONFIGS.names())}; GGUF files run their own types).")
    return method


def quantization_config(name: str, hf_config: Any) -> QuantizationConfig:
    """The parsed config of format `name`: from the checkpoint's quantization_config, or for
    online quantization where the checkpoint has none."""
    cls = QUANTIZATION_CONFIGS.get(name)
    qc = _quantization_dict(hf_config)
    return cls.online() if qc is None else cls.from_checkpoint(qc)


def _quantization_dict(hf_config: Any) -> dict[str, Any] | None:
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    return qc if isinstance(qc, dict) else qc.to_dict()
