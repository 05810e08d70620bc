"""Structured outputs on the GPU: the token masks (xgrammar's CUDA path) keep the tiny model to its
constraint, through CUDA graphs and with unconstrained requests in the same batch. The tiny model
speaks a byte-level tokenizer here (one token a byte), so any text can be spelled."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from pagedllm import LLM, SamplingParams
from pagedllm.sampling_params import StructuredOutputsParams
from tests.helpers.fake_engine import make_tokenizer

pytest.importorskip("xgrammar")


def byte_level_model_folder(tiny_hf_model, folder: str) -> str:
    """The tiny llama checkpoint with a byte-level tokenizer (its 259 ids within the model's 384)."""
    model = tiny_hf_model("llama")
    shutil.copytree(model.folder, folder, dirs_exist_ok=True)
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": tokenizer.eos_token_id}, f)
    return folder


@pytest.fixture(scope="module")
def llm(tiny_hf_model, tmp_path_factory):
    folder = byte_level_model_folder(tiny_hf_model, str(tmp_path_factory.mktemp("bytes")))
    return LLM(folder, dtype="float32", max_model_len=256, device="cuda", num_gpu_blocks_override=128,
               cuda_graph_sizes=[1, 2, 4, 8])


def test_masks_hold_on_the_gpu(llm):
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["a"]}
    constraints = [StructuredOutputsParams(choice=["yes", "no"]), StructuredOutputsParams(regex="[0-9]{3}"),
                   StructuredOutputsParams(json=schema, disable_any_whitespace=True)]
    prompts = ["Question one?", "Question two?", "Question three?", "Question four?", "Plain one.", "Plain two."]
    params = [SamplingParams(temperature=t, seed=i, max_tokens=40, structured_outputs=constraints[i % 3])
              for i, t in enumerate([0.0, 1.0, 0.0, 1.0])]
    plain = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    outs = llm.generate(prompts, [*params, plain, plain], use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    assert texts[0] in ("yes", "no") and texts[3] in ("yes", "no"), texts
    assert re.fullmatch("[0-9]{3}", texts[1]), texts
    assert 0 <= json.loads(texts[2])["a"] <= 99, texts
    assert all(o.outputs[0].finish_reason == "stop" for o in outs[:4])
    alone = llm.generate(prompts[4:], plain, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in alone] == [o.outputs[0].token_ids for o in outs[4:]]
