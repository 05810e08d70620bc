"""The Ray executor: a Ray cluster of two "nodes" on this machine (`ray start --head`, then a second
`ray start --address` with its own resources), found through RAY_ADDRESS, runs a two-rank engine
with one rank on each node, as one rank does; a killed actor ends the engine within seconds."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from pagedllm import LLM, SamplingParams
from pagedllm.executor.base import WorkerFailure
from tests.helpers.hf_oracle import hf_greedy
from tests.helpers.server_process import free_port

pytest.importorskip("ray")
_RAY = shutil.which("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    if _RAY is None:
        pytest.skip("the ray command is not installed")
    port = free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([_RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                   check=True, capture_output=True, env=env)
    try:
        subprocess.run([_RAY, "start", "--address", f"127.0.0.1:{port}", "--resources", '{"second_node": 1}',
                        *common], check=True, capture_output=True, env=env)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        os.environ["RAY_AUTH_MODE"] = "disabled"
        yield f"127.0.0.1:{port}"
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        subprocess.run([_RAY, "stop", "--force"], capture_output=True, env=env)


def _llm(folder: str, tokenizer: str, tp: int = 2, pp: int = 1) -> LLM:
    # no distributed_executor_backend: RAY_ADDRESS makes it Ray's
    return LLM(folder, tokenizer=tokenizer, tensor_parallel_size=tp, pipeline_parallel_size=pp, dtype="float32",
               max_model_len=256, num_gpu_blocks_override=64)


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2)])
def test_two_ranks_on_two_nodes_equal_hf(tp, pp, ray_cluster, tiny_hf_model, smollm2_tokenizer_dir):
    model = tiny_hf_model("qwen3")
    llm = _llm(model.folder, smollm2_tokenizer_dir, tp, pp)
    try:
        executor = llm.llm_engine.executor
        assert llm.llm_engine.config.parallel_config.distributed_executor_backend == "ray"
        assert len(set(executor.node_ids)) == 2  # one rank on each node
        prompts = [[1, 40, 41, 300, 7], [1, *range(100, 140)]]
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=10),
                            use_tqdm=False)
        for ids, out in zip(prompts, outs):
            assert out.outputs[0].token_ids == hf_greedy(model.hf_model, ids, 10, {2, 5})
    finally:
        llm.llm_engine.engine_core.shutdown()


def test_a_killed_ray_worker_ends_the_engine_within_seconds(ray_cluster, tiny_hf_model, smollm2_tokenizer_dir):
    import ray

    llm = _llm(tiny_hf_model("llama").folder, smollm2_tokenizer_dir)
    engine = llm.llm_engine
    try:
        engine.add_request("r", {"prompt_token_ids": [1, 7, 9]}, SamplingParams(max_tokens=200, ignore_eos=True))
        engine.step()
        os.kill(ray.get(engine.executor.actors[1].pid.remote()), signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerFailure, match=r"Worker rank 1 \(a Ray actor\) died"):
            while engine.has_unfinished_requests():
                engine.step()
        assert time.monotonic() - start < 5
    finally:
        engine.engine_core.shutdown()
