"""A model runner's request states built from short tuples, for the step-input tests (CPU and GPU)."""
from __future__ import annotations

from pagedllm.core.scheduler_output import NewRequestData
from pagedllm.sampling_params import SamplingParams
from pagedllm.worker.request_states import RequestStates

BLOCK = 4  # the block size that the tests' block ids and expected slots assume


def make_states(*reqs: tuple[str, list[int], list[int], int]) -> RequestStates:
    """Requests (id, prompt, blocks, num_computed) in a runner's states."""
    states = RequestStates(max_num_reqs=8, max_model_len=32, max_num_blocks_per_req=8)
    for req_id, prompt, blocks, computed in reqs:
        states.add(NewRequestData(req_id, prompt, [], SamplingParams(), blocks, computed))
    return states
