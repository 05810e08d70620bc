"""Fixtures for end-to-end tests: engines over the real SmolLM2 model and HF oracles."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    from pagedllm.models.source import default_model_file

    try:
        return default_model_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The GGUF's tokenizer saved once as a HF folder, so each engine loads it in a blink."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(smollm2_gguf), gguf_file=os.path.basename(smollm2_gguf))
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def make_smollm2_llm(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    from pagedllm import LLM

    def make(**kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("max_model_len", 2048)
        kwargs.setdefault("kv_cache_memory", 256 << 20)
        kwargs.setdefault("quantization", "none")  # dequantized: what HF runs; tests ask for "gguf"
        return LLM(smollm2_gguf, tokenizer=smollm2_tokenizer_dir, **kwargs)

    return make


@pytest.fixture(scope="session")
def smollm2_llm(make_smollm2_llm):
    return make_smollm2_llm()


@pytest.fixture(scope="session")
def smollm2_quantized_llm(make_smollm2_llm):
    """The GGUF's own quantized types, as `pagedllm serve` runs it by default on the CPU."""
    return make_smollm2_llm(quantization="gguf")


@pytest.fixture(scope="session")
def hf_smollm2_model(hf_smollm2):
    """HF transformers' own model of the GGUF (built by the root conftest without accelerate)."""
    return hf_smollm2


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    """The real server over the default model, one per module (a module that needs other flags
    defines its own `server`, which `client` then uses)."""
    from tests.helpers.server_checks import server_args
    from tests.helpers.server_process import ServerProcess

    with ServerProcess(server_args(smollm2_gguf, smollm2_tokenizer_dir)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    """The official openai client of the module's server."""
    import openai

    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
