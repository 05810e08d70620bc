"""--generation-config (vLLM's): "auto" takes the model's generation_config.json sampling defaults,
"vllm" the neutral ones, a folder its own file; a request's own values always win (issue 17, item 15)."""
from __future__ import annotations

import json

import pytest

from pagedllm.generation_config import SamplingDefaults, load_sampling_defaults
from pagedllm.server.protocol import ChatCompletionRequest, CompletionRequest

QWEN3_LIKE = {"bos_token_id": 1, "eos_token_id": [2, 5], "do_sample": True, "temperature": 0.6, "top_p": 0.95,
              "top_k": 20, "repetition_penalty": 1.1, "max_new_tokens": 7, "transformers_version": "4.51.0"}


def _folder(tmp_path, name: str, generation_config: dict | None) -> str:
    folder = tmp_path / name
    folder.mkdir()
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config))
    return str(folder)


def test_auto_vllm_and_a_folder(tmp_path) -> None:
    model = _folder(tmp_path, "model", QWEN3_LIKE)
    auto = load_sampling_defaults("auto", model)
    assert auto == SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20, repetition_penalty=1.1, max_tokens=7)
    assert load_sampling_defaults("vllm", model) == SamplingDefaults()
    other = _folder(tmp_path, "other", {"temperature": 0.3})
    assert load_sampling_defaults(other, model) == SamplingDefaults(temperature=0.3)
    assert load_sampling_defaults("auto", _folder(tmp_path, "plain", {"eos_token_id": 2})) == SamplingDefaults()
    assert load_sampling_defaults("auto", _folder(tmp_path, "none", None)) == SamplingDefaults()


def test_bad_generation_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="generation_config.*nope"):
        load_sampling_defaults(str(tmp_path / "nope"), None)
    with pytest.raises(ValueError, match="has no generation_config.json"):
        load_sampling_defaults(_folder(tmp_path, "empty", None), None)
    with pytest.raises(ValueError, match="top_p"):
        load_sampling_defaults("auto", _folder(tmp_path, "bad", {"top_p": 0.0}))


def test_requests_take_the_defaults_for_what_they_leave_unset() -> None:
    defaults = SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20, min_p=0.05, repetition_penalty=1.1,
                                max_tokens=7)
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])
    p = chat.to_sampling_params(5, 100, defaults)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.max_tokens) == (
        0.6, 0.95, 20, 0.05, 1.1, 7)
    own = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], temperature=0, top_k=3, max_tokens=50)
    p = own.to_sampling_params(5, 100, defaults)
    assert (p.temperature, p.top_k, p.top_p, p.max_tokens) == (0, 3, 0.95, 50)
    assert ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}]).to_sampling_params(
        95, 100, defaults).max_tokens == 5  # a default never asks for more than the context has left
    assert CompletionRequest(prompt="hi").to_sampling_params(5, 100, defaults).max_tokens == 7
    assert CompletionRequest(prompt="hi", max_tokens=16).to_sampling_params(5, 100, defaults).max_tokens == 16
    plain = CompletionRequest(prompt="hi").to_sampling_params(5, 100)  # no defaults: the API's own
    assert (plain.temperature, plain.top_k, plain.max_tokens) == (1.0, 0, 16)


def test_serve_takes_generation_config_and_hands_the_defaults_to_the_http_layer(tmp_path) -> None:
    import argparse

    from pagedllm.config import ModelConfig
    from pagedllm.server.launch import add_serve_args, server_settings

    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    args = parser.parse_args(["--generation-config", "vllm"])
    assert args.generation_config == "vllm" and parser.parse_args([]).generation_config == "auto"
    defaults = SamplingDefaults(temperature=0.6)
    model_config = ModelConfig("/m", None, None, None, "float32", 64, sampling_defaults=defaults)
    assert server_settings(args, model_config).sampling_defaults == defaults
