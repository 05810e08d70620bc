"""The runner's flattened step input: token layout and slots (CUDA-graph padding: tests/gpu)."""
from __future__ import annotations

import torch

from pagedllm.worker.input_builder import build_model_input
from tests.helpers.runner_states import BLOCK, make_states

CPU = torch.device("cpu")


def test_mixed_step_layout():
    states = make_states(("a", list(range(10, 16)), [7, 3], 0), ("b", list(range(20, 25)), [5, 6], 4))
    inp = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CPU)
    assert inp.input_ids.tolist() == [10, 11, 12, 13, 14, 15, 24]
    assert inp.positions.tolist() == [0, 1, 2, 3, 4, 5, 4]
    assert inp.attn_metadata.slot_mapping.tolist() == [28, 29, 30, 31, 12, 13, 24]
    assert inp.attn_metadata.seq_lens.tolist() == [6, 5]
    assert inp.attn_metadata.query_start_loc_cpu == [0, 6, 7]
    assert inp.attn_metadata.block_table.tolist() == [[7, 3], [5, 6]]
    assert inp.logits_indices.tolist() == [5, 6]
    assert inp.padded_num_tokens is None
