"""Our GGUF loader on the embedded SmolLM2-135M Q4_1 file against transformers' own GGUF loading."""
from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from pagedllm.engine.tokenizer import load_tokenizer
from pagedllm.models.gguf_loader import iter_gguf_weights, reverse_llama_permute
from pagedllm.models.loader import process_weights_after_loading, get_generation_eos_ids, load_hf_config
from pagedllm.models.registry import get_model_class
from pagedllm.models.source import ModelSource
from tests.helpers.paged_runner import PagedRunner


@pytest.fixture(scope="module")
def smollm2_config(smollm2_source: ModelSource) -> Any:
    return load_hf_config(smollm2_source)


@pytest.fixture(scope="module")
def our_gguf_weights(smollm2_source: ModelSource, smollm2_config: Any) -> dict[str, torch.Tensor]:
    path = os.path.join(smollm2_source.path, smollm2_source.gguf_file)
    return dict(iter_gguf_weights(path, smollm2_config))


@pytest.fixture(scope="module")
def our_smollm2(smollm2_config: Any, our_gguf_weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    # Same steps as loader.load_model, fed from the already dequantized tensors (dequantizing is slow).
    model = get_model_class(smollm2_config.architectures[0])(smollm2_config, "float32")
    model.load_weights(our_gguf_weights.items())
    process_weights_after_loading(model)
    return model.eval()


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_source: ModelSource) -> Any:
    return load_tokenizer(smollm2_source)


def test_config_and_eos(smollm2_source: ModelSource, smollm2_config: Any) -> None:
    assert smollm2_config.architectures == ["LlamaForCausalLM"]
    assert smollm2_config.tie_word_embeddings
    assert get_generation_eos_ids(smollm2_source) == [2]
    assert get_generation_eos_ids(smollm2_source, smollm2_config) == [2]  # from the config, no re-parse


def test_weights_equal_hf_state_dict(our_gguf_weights: dict[str, torch.Tensor], hf_smollm2: Any) -> None:
    hf_state = hf_smollm2.state_dict()
    for name, tensor in our_gguf_weights.items():
        assert torch.equal(tensor.float(), hf_state[name]), name
    seen = set(our_gguf_weights)
    assert "model.layers.0.self_attn.q_proj.weight" in seen and "model.layers.29.self_attn.k_proj.weight" in seen
    # Tied: the file has no separate output matrix.
    assert "lm_head.weight" not in seen


def test_reverse_permute_inverts_llama_cpp_permute() -> None:
    w = torch.randn(12, 5)
    heads = 3
    # llama.cpp's converter: reshape(heads, 2, dim/2, ...).swapaxes(1, 2)
    permuted = w.reshape(heads, 2, 2, 5).transpose(1, 2).reshape(12, 5)
    assert torch.equal(reverse_llama_permute(permuted, heads), w)


@torch.no_grad()
def test_logits_match_hf(our_smollm2: torch.nn.Module, hf_smollm2: Any, smollm2_tokenizer: Any) -> None:
    tok = smollm2_tokenizer
    prompts = [tok.encode("The capital of France is"),
               tok.apply_chat_template([{"role": "user", "content": "Name three colors."}],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)]
    prompts = [list(p) for p in prompts]
    runner = PagedRunner(our_smollm2, num_blocks=32, block_size=16)
    ours = runner.step({i: p for i, p in enumerate(prompts)})
    for i, p in enumerate(prompts):
        ref = hf_smollm2(torch.tensor([p])).logits[0, -1].float()
        assert (ours[i] - ref).abs().max().item() <= 1e-3
        assert ours[i].argmax() == ref.argmax()
    # One decode step through the paged cache, feeding HF's greedy token.
    nxt = {i: int(ours[i].argmax()) for i in range(len(prompts))}
    dec = runner.step({i: [t] for i, t in nxt.items()})
    for i, p in enumerate(prompts):
        ref = hf_smollm2(torch.tensor([p + [nxt[i]]])).logits[0, -1].float()
        assert (dec[i] - ref).abs().max().item() <= 1e-3


def test_tokenizer_has_chat_template(smollm2_tokenizer: Any) -> None:
    tok = smollm2_tokenizer
    assert tok.chat_template
    assert tok.eos_token_id == 2
    assert tok.decode(tok.encode("Hello world")) == "Hello world"
