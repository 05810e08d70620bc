"""The runner's own copy of each running request, in preallocated rows so a step is built with numpy.

A request keeps its row from the step it is added until it finishes or is preempted. Token ids and
block tables live in 2-D arrays indexed by row, so gathering a step's inputs is a few vectorised ops
rather than a Python loop per token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedllm.core.scheduler_output import CachedRequestData, NewRequestData
from pagedllm.sampling_params import SamplingParams


@dataclass(slots=True)
class RowState:
    """Python-side state of one row that the sampler needs."""

    req_id: str
    row: int
    sampling_params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    num_tokens: int  # prompt + output tokens known to the runner (on the host)
    # Tokens sampled by a step whose result has not reached the host yet (0 or 1; asynchronous
    # scheduling). The next step reads such a token from the device (RequestStates.prev_sample_index).
    num_pending: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


class RequestStates:
    def __init__(self, max_num_reqs: int, max_model_len: int, max_num_blocks_per_req: int) -> None:
        self.max_num_reqs = max_num_reqs
        # one spare column: the token sampled at the last position is stored before the stop check
        self.token_ids = np.zeros((max_num_reqs, max_model_len + 1), dtype=np.int64)  # [rows, max_model_len + 1]
        self.block_table = np.zeros((max_num_reqs, max_num_blocks_per_req), dtype=np.int32)  # [rows, max_blocks]
        self.num_blocks = np.zeros(max_num_reqs, dtype=np.int32)  # [rows]
        self.num_computed = np.zeros(max_num_reqs, dtype=np.int64)  # [rows] before this step
        # [rows] row -> index of its token in the last launched step's sampled tensor, -1 if it
        # sampled nothing there; what a step built before that token reaches the host reads.
        self.prev_sample_index = np.full(max_num_reqs, -1, dtype=np.int64)
        self.reqs: dict[str, RowState] = {}
        self._free_rows = list(range(max_num_reqs - 1, -1, -1))

    def __len__(self) -> int:
        return len(self.reqs)

    def remove(self, req_ids: set[str]) -> None:
        for req_id in req_ids:
            state = self.reqs.pop(req_id, None)
            if state is not None:
                self.prev_sample_index[state.row] = -1  # a new owner of the row has no pending token
                self._free_rows.append(state.row)

    def add(self, new: NewRequestData) -> RowState:
        if not self._free_rows:
            raise RuntimeError(f"More than max_num_reqs={self.max_num_reqs} requests in the runner.")
        row = self._free_rows.pop()
        tokens = new.prompt_token_ids + new.output_token_ids
        self.token_ids[row, : len(tokens)] = tokens
        self._set_blocks(row, new.block_ids)
        self.num_computed[row] = new.num_computed_tokens
        state = RowState(new.req_id, row, new.sampling_params, list(new.prompt_token_ids),
                         list(new.output_token_ids), len(tokens))
        self.reqs[new.req_id] = state
        return state

    def update_cached(self, cached: CachedRequestData) -> None:
        for req_id, new_blocks, num_computed in zip(cached.req_ids, cached.new_block_ids, cached.num_computed_tokens):
            row = self.reqs[req_id].row
            if new_blocks:
                n = int(self.num_blocks[row])
                self.block_table[row, n : n + len(new_blocks)] = new_blocks
                self.num_blocks[row] = n + len(new_blocks)
            self.num_computed[row] = num_computed

    def write_drafts(self, req_id: str, drafts: list[int]) -> None:
        """Put draft tokens after the request's known ones, where the step's inputs are read from
        (accepted ones are overwritten by append_sampled with the same value, the rest later)."""
        state = self.reqs[req_id]
        self.token_ids[state.row, state.num_tokens: state.num_tokens + len(drafts)] = drafts

    def sequence(self, state: RowState) -> np.ndarray:
        """[num_tokens] the request's prompt and outputs known on the host (a view of its row)."""
        return self.token_ids[state.row, : state.num_tokens]

    def append_sampled(self, state: RowState, token_id: int) -> None:
        self.token_ids[state.row, state.num_tokens] = token_id
        state.num_tokens += 1
        state.output_token_ids.append(token_id)

    def mark_sampled(self, sampled_states: list[RowState]) -> None:
        """A step that samples these rows was launched; their tokens come later (append_sampled)."""
        self.prev_sample_index.fill(-1)
        for i, state in enumerate(sampled_states):
            state.num_pending += 1
            self.prev_sample_index[state.row] = i

    def is_current(self, state: RowState) -> bool:
        """Whether the row still belongs to this request (not finished or preempted since)."""
        return self.reqs.get(state.req_id) is state

    def _set_blocks(self, row: int, block_ids: list[int]) -> None:
        self.block_table[row, : len(block_ids)] = block_ids
        self.num_blocks[row] = len(block_ids)
