"""The runner's flattened step input: token layout, slots, and the padding of CUDA-graph steps."""
from __future__ import annotations

import numpy as np
import torch

from pagedllm.core.scheduler_output import NewRequestData
from pagedllm.sampling_params import SamplingParams
from pagedllm.worker.input_builder import build_model_input
from pagedllm.worker.request_states import RequestStates

BLOCK = 4
CPU = torch.device("cpu")


def _states(*reqs: tuple[str, list[int], list[int], int]) -> RequestStates:
    """Requests (id, prompt, blocks, num_computed) in a runner's states."""
    states = RequestStates(max_num_reqs=8, max_model_len=32, max_num_blocks_per_req=8)
    for req_id, prompt, blocks, computed in reqs:
        states.add(NewRequestData(req_id, prompt, [], SamplingParams(), blocks, computed))
    return states


def test_mixed_step_layout():
    states = _states(("a", list(range(10, 16)), [7, 3], 0), ("b", list(range(20, 25)), [5, 6], 4))
    inp = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CPU)
    assert inp.input_ids.tolist() == [10, 11, 12, 13, 14, 15, 24]
    assert inp.positions.tolist() == [0, 1, 2, 3, 4, 5, 4]
    assert inp.attn_metadata.slot_mapping.tolist() == [28, 29, 30, 31, 12, 13, 24]
    assert inp.attn_metadata.seq_lens.tolist() == [6, 5]
    assert inp.attn_metadata.query_start_loc_cpu == [0, 6, 7]
    assert inp.attn_metadata.block_table.tolist() == [[7, 3], [5, 6]]
    assert inp.logits_indices.tolist() == [5, 6]
    assert inp.padded_num_tokens is None


def test_decode_step_padded_for_a_graph():
    states = _states(("a", [1, 2, 3, 4, 5], [2, 9], 4), ("b", [6, 7], [4], 1))
    inp = build_model_input(states, ["b", "a"], [1, 1], BLOCK, CPU, pad_to=4)
    md = inp.attn_metadata
    assert inp.padded_num_tokens == 4
    assert md.num_actual_tokens == 2 and md.num_reqs == 2  # the real batch; the graph covers padding
    assert inp.input_ids.tolist() == [7, 5, 0, 0]
    assert inp.positions.tolist() == [1, 4, 0, 0]
    assert md.slot_mapping.tolist() == [17, 36, -1, -1]  # padded rows write no K/V
    assert md.seq_lens.tolist() == [2, 5, 1, 1]
    assert md.query_start_loc.tolist() == [0, 1, 2, 3, 4]
    table = md.block_table.numpy()
    assert table.shape == (4, 8)  # full width: the width the graph was captured with
    assert table[0, :1].tolist() == [4] and table[1, :2].tolist() == [2, 9]
    assert not np.any(table[2:])
    assert inp.logits_indices.tolist() == [0, 1]
