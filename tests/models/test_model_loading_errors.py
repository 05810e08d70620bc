"""Clear errors for things the loaders cannot do."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest

from pagedllm.config import ModelConfig
from pagedllm.layers.rotary import rope_config_from_hf
from pagedllm.models.loader import get_generation_eos_ids, load_hf_config, load_model
from pagedllm.models.registry import get_model_class, supported_architectures
from pagedllm.models.safetensors_loader import safetensors_files
from pagedllm.models.source import ModelSource


def test_unknown_architecture_names_it_and_the_supported_list() -> None:
    with pytest.raises(ValueError, match="GPTNeoXForCausalLM") as e:
        get_model_class("GPTNeoXForCausalLM")
    assert "LlamaForCausalLM" in str(e.value) and "Qwen3ForCausalLM" in str(e.value)
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"} <= set(
        supported_architectures())


def test_missing_folder(tmp_path: Any) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match="nope"):
        load_hf_config(ModelSource(missing))
    with pytest.raises(ValueError, match="nope"):
        safetensors_files(missing)
    with pytest.raises(ValueError, match="missing.gguf"):
        load_hf_config(ModelSource(str(tmp_path), "missing.gguf"))


def test_bin_only_folder_is_refused(tmp_path: Any) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ValueError, match="safetensors"):
        safetensors_files(str(tmp_path))


def test_missing_weight_is_named(tiny_hf_model: Any, tmp_path: Any) -> None:
    from safetensors.torch import load_file, save_file

    tiny = tiny_hf_model("qwen2")
    for name in os.listdir(tiny.folder):
        if name.endswith(".json"):
            (tmp_path / name).write_text(open(os.path.join(tiny.folder, name)).read())
    state = load_file(os.path.join(tiny.folder, "model.safetensors"))
    del state["model.layers.1.self_attn.k_proj.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    source = ModelSource(str(tmp_path))
    mc = ModelConfig(str(tmp_path), None, None, load_hf_config(source), "float32", 64)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
        load_model(mc)


def test_unknown_architecture_in_folder(tiny_hf_model: Any, tmp_path: Any) -> None:
    tiny = tiny_hf_model("llama")
    cfg = json.load(open(os.path.join(tiny.folder, "config.json")))
    mc = ModelConfig(tiny.folder, None, None, SimpleNamespace(**{**cfg, "architectures": ["FancyForCausalLM"]}),
                     "float32", 64)
    with pytest.raises(ValueError, match="FancyForCausalLM"):
        load_model(mc)


def test_generation_eos_ids_from_generation_config(tiny_hf_model: Any) -> None:
    assert get_generation_eos_ids(tiny_hf_model("llama").source) == [2, 5]


def test_unsupported_dtype(tiny_hf_model: Any) -> None:
    tiny = tiny_hf_model("llama")
    mc = ModelConfig(tiny.folder, None, None, load_hf_config(tiny.source), "float64", 64)
    with pytest.raises(ValueError, match="float64"):
        load_model(mc)


def test_rope_config_old_and_new_style() -> None:
    old = SimpleNamespace(rope_theta=5e5, rope_scaling={"type": "linear", "factor": 2.0})
    rope = rope_config_from_hf(old)
    assert rope.theta == 5e5 and rope.rope_type == "linear" and rope.params["factor"] == 2.0
    new = SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    assert rope_config_from_hf(new).theta == 1e4
    assert rope_config_from_hf(SimpleNamespace()).rope_type == "default"


def test_tokenizer_folder_missing(tmp_path: Any) -> None:
    from pagedllm.engine.tokenizer import load_tokenizer

    with pytest.raises(ValueError, match="no_tok"):
        load_tokenizer(ModelSource(str(tmp_path)), tokenizer=str(tmp_path / "no_tok"))
    with pytest.raises(ValueError, match="gone"):
        load_tokenizer(ModelSource(str(tmp_path / "gone")))
