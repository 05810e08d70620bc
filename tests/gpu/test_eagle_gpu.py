"""EAGLE and EAGLE-3 heads on the GPU: HF's greedy tokens for the tiny llama target, the head's
passes replayed from its own captured graphs (decode graphs for the draft passes, piecewise for
the catch-up; EAGLE-3's layer taps inside the target's graphs), drafting what they draft eagerly."""
from __future__ import annotations

import random

import pytest
import torch

from pagedllm import LLM, SamplingParams
from tests.helpers.eagle_heads import write_eagle_head
from tests.helpers.hf_gpu import hf_greedy_with_logprobs

EOS_IDS = {2, 5}
GREEDY = SamplingParams(temperature=0, max_tokens=16)


def _prompts() -> list[list[int]]:
    rng = random.Random(9)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 50))] for _ in range(8)]


@pytest.fixture(scope="module")
def target_and_reference(tiny_gpu_model, hf_on_gpu):
    model = tiny_gpu_model("llama")
    hf = hf_on_gpu(model, torch.float32)
    return model, [hf_greedy_with_logprobs(hf, p, 16, eos_ids=EOS_IDS)[0] for p in _prompts()]


@pytest.fixture(scope="module", params=["eagle", "eagle3"])
def head(request, target_and_reference, tmp_path_factory):
    model, _ = target_and_reference
    extra = {} if request.param == "eagle" else {"draft_vocab_size": 128, "aux_layers": [0, 1, 1]}
    return request.param, write_eagle_head(str(tmp_path_factory.mktemp(request.param)), model.hf_model.config,
                                           request.param, **extra)


def _run(folder: str, method: str, head_folder: str, enforce_eager: bool) -> tuple[LLM, list[list[int]]]:
    llm = LLM(folder, dtype="float32", max_model_len=256, device="cuda", num_gpu_blocks_override=128,
              cuda_graph_sizes=[1, 2, 4, 8], max_num_batched_tokens=256, enforce_eager=enforce_eager,
              speculative_config={"method": method, "model": head_folder, "num_speculative_tokens": 3})
    outs = llm.generate([{"prompt_token_ids": p} for p in _prompts()], GREEDY, use_tqdm=False)
    return llm, [o.outputs[0].token_ids for o in outs]


def test_heads_in_graphs_draft_as_eagerly(target_and_reference, head):
    model, reference = target_and_reference
    method, head_folder = head
    stats = {}
    for eager in (True, False):
        llm, outs = _run(model.folder, method, head_folder, eager)
        assert outs == reference
        stats[eager] = llm.llm_engine.engine_core.make_stats().spec_decoding
        runtime = llm.llm_engine.executor.worker.runner.speculator.proposer._runtime
        if not eager:
            assert runtime.draft_graphs.num_replays > 0 and runtime.draft_piecewise.num_replays > 0
        llm.llm_engine.scheduler.kv_cache_manager.check_all_free()
        del llm
    assert stats[True].num_drafts > 0
    assert (stats[False].num_draft_tokens, stats[False].num_accepted_tokens) == \
        (stats[True].num_draft_tokens, stats[True].num_accepted_tokens)
