"""The server with --async-scheduling (the CUDA default) on the CPU: the same checks as
test_server_openai.py where the overlap could go wrong — greedy equality with the offline engine,
streamed vs whole seeded output, stop strings (an abort from the API process while a step is in
flight), and random client disconnects leaving every KV block free."""
from __future__ import annotations

import openai
import pytest

from tests.e2e.test_server_openai import (MODEL, test_greedy_completions_equal_offline_llm,  # noqa: F401
                                          test_n2_stream_matches_non_stream, test_random_disconnects_free_every_block,
                                          test_stop_string)
from tests.helpers.server_process import ServerProcess


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    args = [smollm2_gguf, "--tokenizer", smollm2_tokenizer_dir, "--served-model-name", MODEL,
            "--dtype", "float32", "--max-model-len", "2048", "--kv-cache-memory", str(256 << 20),
            "--disable-log-stats", "--async-scheduling"]
    with ServerProcess(args) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
