"""Start-up returns values and rewrites no config: the executor's KV-cache plan (blocks, the
context they fit) becomes a new, final EngineConfig that the scheduler, the executor and the
frontend's validation all take; the config the user's arguments made is left as it was."""
from __future__ import annotations

import pytest

from pagedllm.bench.model_folders import write_model_folder
from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.engine import LLMEngine
from pagedllm.executor.base import EXECUTORS
from pagedllm.sampling_params import SamplingParams
from tests.helpers.plan_executor import PlanExecutor

TINY = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=384,
            max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)


def test_engine_builds_its_final_config_from_the_plan(tmp_path, monkeypatch):
    EXECUTORS.register("plan", "tests.helpers.plan_executor:PlanExecutor")
    folder = write_model_folder(str(tmp_path / "tiny"), TINY)
    # dummy: the folder has no checkpoint (the plan executor loads none; the config would refuse it)
    requested = EngineArgs(model=folder, device="cpu", load_format="dummy").create_engine_config()
    engine = LLMEngine(requested, executor="plan")
    final = engine.config
    assert requested.model_config.max_model_len == 256 and requested.cache_config.num_blocks is None
    assert final.model_config.max_model_len == final.scheduler_config.max_model_len == 100
    assert final.cache_config.num_blocks == engine.num_blocks == 7
    assert PlanExecutor.final is final
    assert engine.scheduler.max_model_len == 100
    with pytest.raises(ValueError, match="100"):  # the frontend validates against the final context
        engine.add_request("long", {"prompt_token_ids": [5] * 120}, SamplingParams(max_tokens=4))
    engine.add_request("short", {"prompt_token_ids": [5] * 20}, SamplingParams(max_tokens=4))
