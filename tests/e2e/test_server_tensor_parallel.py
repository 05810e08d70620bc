"""The server with two tensor-parallel ranks: answers as the offline engine does; a killed worker
makes it unhealthy at once, as a dead engine core does."""
from __future__ import annotations

import os
import signal
import time

import httpx2 as httpx

from pagedllm import LLM, SamplingParams
from tests.helpers.server_process import ServerProcess


def test_server_runs_two_ranks_and_turns_unhealthy_when_one_dies(tiny_hf_model, smollm2_tokenizer_dir) -> None:
    folder = tiny_hf_model("qwen2").folder
    common = ["--tokenizer", smollm2_tokenizer_dir, "--dtype", "float32", "--max-model-len", "256",
              "--num-gpu-blocks-override", "64", "--served-model-name", "m"]
    prompt = [1, 40, 41, 42, 77, 300]
    with ServerProcess([folder, *common, "--tensor-parallel-size", "2"]) as server:
        assert len(server.worker_pids()) == 2
        body = {"model": "m", "prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        got = httpx.post(server.base_url + "/v1/completions", json=body, timeout=60).json()
        llm = LLM(folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256,
                  num_gpu_blocks_override=64)
        want = llm.generate({"prompt_token_ids": prompt}, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True),
                            use_tqdm=False)
        assert got["choices"][0]["text"] == want[0].outputs[0].text
        long = {**body, "max_tokens": 200}
        with httpx.stream("POST", server.base_url + "/v1/completions", json={**long, "stream": True},
                          timeout=60) as resp:
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            killed_at = time.monotonic()
            os.kill(server.worker_pids()[1], signal.SIGKILL)
            rest = list(lines)  # ends, does not hang
        assert time.monotonic() - killed_at < 5
        assert any("error" in line for line in rest)
        assert httpx.get(server.base_url + "/health").status_code == 503
