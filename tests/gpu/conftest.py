"""GPU tests: skipped without CUDA. Tiny random-weight checkpoints (tests/conftest.py) get a
word-level tokenizer so no GGUF or download is needed on the GPU machine."""
from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from pagedllm.bench.model_folders import write_tokenizer

BACKENDS = ["triton", "torch"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_gpu_model(tiny_hf_model: Callable[..., Any]) -> Callable[[str], Any]:
    """tiny_gpu_model(arch): the tiny checkpoint's folder now also holds a tokenizer."""
    done: set[str] = set()

    def make(arch: str) -> Any:
        model = tiny_hf_model(arch)
        if arch not in done:
            write_tokenizer(model.folder, model.hf_model.config.vocab_size)
            done.add(arch)
        return model

    return make


@pytest.fixture(scope="session")
def hf_on_gpu() -> Callable[[Any, torch.dtype], Any]:
    """hf_on_gpu(tiny_model, dtype): HF transformers' model of the checkpoint on the GPU."""
    cache: dict[tuple[str, torch.dtype], Any] = {}

    def make(model: Any, dtype: torch.dtype) -> Any:
        from transformers import AutoModelForCausalLM

        key = (model.folder, dtype)
        if key not in cache:
            cache[key] = AutoModelForCausalLM.from_pretrained(model.folder, dtype=dtype).cuda().eval()
        return cache[key]

    return make


@pytest.fixture(params=BACKENDS)
def attention_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs the test once per CUDA attention backend (the platform reads the variable)."""
    monkeypatch.setenv("PAGEDLLM_ATTENTION_BACKEND", request.param)
    yield request.param


@pytest.fixture(autouse=True)
def _free_gpu_memory() -> Iterator[None]:
    """Engines of earlier tests hold KV caches; free them so each test sizes from a clean card."""
    yield
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
