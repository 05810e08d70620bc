"""The runner's flattened step input: token layout and slots (CUDA-graph padding: tests/gpu)."""
from __future__ import annotations

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
