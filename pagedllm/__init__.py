"""pagedllm: high-throughput, memory-efficient LLM inference."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pagedllm.envs import set_openmp_wait_policy

set_openmp_wait_policy()  # before torch loads libgomp: see envs.OPENMP_SPIN_COUNT

__version__ = "0.1.0"
__all__ = ["LLM", "CompletionOutput", "EngineArgs", "LLMEngine", "RequestOutput", "SamplingParams"]

if TYPE_CHECKING:
    from pagedllm.engine.arg_utils import EngineArgs
    from pagedllm.engine.engine import LLMEngine
    from pagedllm.llm import LLM
    from pagedllm.outputs import CompletionOutput, RequestOutput
    from pagedllm.sampling_params import SamplingParams

_LAZY = {
    "LLM": "pagedllm.llm",
    "SamplingParams": "pagedllm.sampling_params",
    "RequestOutput": "pagedllm.outputs",
    "CompletionOutput": "pagedllm.outputs",
    "EngineArgs": "pagedllm.engine.arg_utils",
    "LLMEngine": "pagedllm.engine.engine",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import pagedllm.core` and the CLI's --help stay free of torch's import time.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pagedllm' has no attribute {name!r}")
