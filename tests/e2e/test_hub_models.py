"""`pagedllm serve ORG/NAME` and `LLM("ORG/NAME")` with the model in the Hugging Face cache, offline
(issue 17, item 17). The cache is written by the test; the server finds it through HF_HUB_CACHE and
HF_HUB_OFFLINE in its environment, read by huggingface_hub itself."""
from __future__ import annotations

import shutil

import httpx2 as httpx
import pytest

from tests.helpers.hub_cache import use_hub_cache, write_hub_snapshot
from tests.helpers.server_process import ServerProcess


@pytest.fixture
def hub_model(tiny_hf_model, smollm2_tokenizer_dir, tmp_path, monkeypatch) -> str:
    files = tmp_path / "files"
    shutil.copytree(tiny_hf_model("llama").folder, files)
    shutil.copytree(smollm2_tokenizer_dir, files, dirs_exist_ok=True)
    cache = str(tmp_path / "hub")
    write_hub_snapshot(cache, "org/tiny-llama", str(files))
    use_hub_cache(monkeypatch, cache)
    return "org/tiny-llama"


def test_serve_a_cached_hub_model(hub_model: str) -> None:
    args = [hub_model, "--max-model-len", "128", "--num-gpu-blocks-override", "32"]
    with ServerProcess(args) as server:
        models = httpx.get(server.base_url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == [hub_model]  # served under the name it was asked by
        body = {"model": hub_model, "prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True}
        out = httpx.post(server.base_url + "/v1/completions", json=body, timeout=60).json()
        assert out["usage"]["completion_tokens"] == 3


def test_llm_takes_a_cached_hub_model(hub_model: str) -> None:
    from pagedllm import LLM, SamplingParams

    llm = LLM(hub_model, max_model_len=128, num_gpu_blocks_override=32)
    out = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 2
