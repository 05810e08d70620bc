"""Structured outputs on the GPU: the token masks (xgrammar's CUDA path) keep the tiny model to its
constraint, through CUDA graphs and with unconstrained requests in the same batch."""
from __future__ import annotations

import pytest

from pagedllm import LLM, SamplingParams
from pagedllm.sampling_params import StructuredOutputsParams

pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def llm(tiny_gpu_model):
    model = tiny_gpu_model("llama")
    return LLM(model.folder, dtype="float32", max_model_len=256, device="cuda", num_gpu_blocks_override=128,
               cuda_graph_sizes=[1, 2, 4, 8])


def test_masks_hold_on_the_gpu(llm):
    # The word-level tokenizer's tokens are "t0".."t383"; the grammar sees them as written.
    choice = StructuredOutputsParams(choice=["t10t11", "t12"])
    regex = StructuredOutputsParams(regex="t1[0-9]t2[0-9]")
    prompts = [{"prompt_token_ids": [5 + i, 40 + i, 77]} for i in range(6)]
    params = [SamplingParams(temperature=t, seed=i, max_tokens=8, structured_outputs=so)
              for i, (t, so) in enumerate([(0.0, choice), (1.0, choice), (0.0, regex), (1.0, regex)])]
    plain = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    outs = llm.generate(prompts, [*params, plain, plain], use_tqdm=False)
    eos = {2, 5}
    for out in outs[:2]:
        assert [t for t in out.outputs[0].token_ids if t not in eos] in ([10, 11], [12])
    for out in outs[2:4]:
        tokens = [t for t in out.outputs[0].token_ids if t not in eos]
        assert len(tokens) == 2 and 10 <= tokens[0] <= 19 and 20 <= tokens[1] <= 29, tokens
    assert all(len(o.outputs[0].token_ids) == 8 for o in outs[4:])
    alone = llm.generate(prompts[4:], plain, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in alone] == [o.outputs[0].token_ids for o in outs[4:]]
