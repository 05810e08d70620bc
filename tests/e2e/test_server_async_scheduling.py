"""The server with --async-scheduling (the CUDA default) on the CPU: the same checks as
test_server_openai.py where the overlap could go wrong — greedy equality with the offline engine,
streamed vs whole seeded output, stop strings (an abort from the API process while a step is in
flight), and random client disconnects leaving every KV block free."""
from __future__ import annotations

import openai
import pytest

from pagedllm import LLM
from tests.helpers.server_checks import (check_greedy_completions_equal_offline_llm, check_n2_stream_matches_non_stream,
                                         check_random_disconnects_free_every_block, check_stop_string, server_args)
from tests.helpers.server_process import ServerProcess


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    with ServerProcess(server_args(smollm2_gguf, smollm2_tokenizer_dir, "--async-scheduling")) as s:
        yield s


def test_greedy_completions_equal_offline_llm(client: openai.OpenAI, smollm2_quantized_llm: LLM) -> None:
    check_greedy_completions_equal_offline_llm(client, smollm2_quantized_llm)  # the server's default: quantized


def test_n2_stream_matches_non_stream(client: openai.OpenAI) -> None:
    check_n2_stream_matches_non_stream(client)


def test_stop_string(client: openai.OpenAI) -> None:
    check_stop_string(client)


def test_random_disconnects_free_every_block(server: ServerProcess) -> None:
    check_random_disconnects_free_every_block(server)
