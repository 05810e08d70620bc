"""Turns a SchedulerOutput plus the runner's request states into one flattened model input.

    tokens     | req0 (chunk of its prompt) | req1 (1 decode token) | req2 ... |
    positions  | c0, c0+1, ..., c0+q0-1     | c1                    | ...      |

No padding (except for CUDA graphs, below): every scheduled token is one row. Built with numpy
over the state rows, then sent to the device in one copy per field (worker/input_buffers.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pagedllm.attention.base import AttentionMetadata
from pagedllm.sample.sampling_metadata import to_device
from pagedllm.worker.input_buffers import InputBuffers, StepTensors
from pagedllm.worker.request_states import RequestStates, RowState


@dataclass
class PromptLogprobsSlice:
    """Rows of this step's hidden states whose next token is a prompt token (for prompt_logprobs)."""

    req_id: str
    hidden_rows: slice  # rows in the step's flattened tokens
    target_token_ids: list[int]  # the prompt token following each row
    num_logprobs: int


@dataclass
class ModelInput:
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    attn_metadata: AttentionMetadata
    req_ids: list[str]  # [num_reqs] in flattened order
    sample_states: list[RowState]  # requests that get a new token this step
    # rows whose logits are sampled: the last token of each of sample_states, and with drafts
    # (speculative decoding) the len(drafts[i]) rows before it too; [sum(len(drafts[i]) + 1)]
    logits_indices: torch.Tensor
    prompt_logprobs: list[PromptLogprobsSlice]
    # decode-only steps run by a CUDA graph: the batch size the inputs are padded to
    padded_num_tokens: int | None = None
    # steps run by piecewise CUDA graphs: the token count input_ids/positions are padded to
    piecewise_num_tokens: int | None = None
    # the draft tokens of each of sample_states, checked this step; None in a step without any
    drafts: list[list[int]] | None = None


def build_model_input(
    states: RequestStates,
    req_ids: list[str],
    num_scheduled: list[int],
    block_size: int,
    device: torch.device,
    buffers: InputBuffers | None = None,
    pad_to: int | None = None,
    prev_sampled: torch.Tensor | None = None,
    pad_tokens_to: int | None = None,
    drafts: dict[str, list[int]] | None = None,
    pad_query_len: int = 1,
) -> ModelInput:
    """The step's flattened input. With `buffers` (CUDA) the tensors are views of its persistent
    device buffers; `pad_to` (a CUDA-graph batch size, decode-only steps) also fills the rows past
    the real requests with padding the graph can run on (see InputBuffers.upload); `pad_tokens_to`
    (a piecewise-graph token count) pads input_ids and positions only. `pad_query_len`: the tokens
    of every request of a `pad_to` step (1: decode; k + 1: a verify graph's step).

    `prev_sampled`: the sampled tokens [S] of the previous step, still on the device when that
    step's result has not reached the host (asynchronous scheduling). A request that sampled there
    starts this step at that token's position; its input token is copied from there on the device.

    `drafts`: req_id -> the draft tokens among its scheduled tokens (the last ones; already in the
    states' token rows): their positions are sampled too."""
    row_states = [states.reqs[r] for r in req_ids]
    rows = np.fromiter((s.row for s in row_states), dtype=np.int64, count=len(row_states))  # [num_reqs]
    num_sched = np.asarray(num_scheduled, dtype=np.int64)  # [num_reqs]
    num_computed = states.num_computed[rows]  # [num_reqs]
    cu = np.cumsum(num_sched)  # [num_reqs]
    total = int(cu[-1])
    starts = cu - num_sched
    # positions: num_computed of the token's request + its offset within this step's chunk
    token_rows = np.repeat(rows, num_sched)  # [num_tokens]
    positions = np.repeat(num_computed - starts, num_sched) + np.arange(total, dtype=np.int64)
    input_ids = states.token_ids[token_rows, positions]
    block_numbers = states.block_table[token_rows, positions // block_size].astype(np.int64)
    slot_mapping = block_numbers * block_size + positions % block_size
    seq_lens = num_computed + num_sched  # [num_reqs]
    query_start_loc = np.zeros(len(rows) + 1, dtype=np.int32)
    query_start_loc[1:] = cu
    seq_lens_list = seq_lens.tolist()
    if drafts:
        sample_idx, logits_indices, step_drafts = _drafted_rows(row_states, seq_lens_list, cu, drafts)
    else:
        sample_idx = [i for i, s in enumerate(row_states) if seq_lens_list[i] == s.num_tokens + s.num_pending]
        logits_indices = cu[sample_idx] - 1
        step_drafts = None
    if pad_to is not None:
        assert buffers is not None, "padding is for CUDA graphs, which read the persistent buffers"
        block_table = states.block_table[rows]  # [num_reqs, max_blocks_per_req]: the graphs' width
    else:
        max_blocks = int((seq_lens.max() + block_size - 1) // block_size)
        block_table = np.ascontiguousarray(states.block_table[rows, :max_blocks])
    if buffers is None:
        arrays = (input_ids, positions, slot_mapping, logits_indices, query_start_loc, seq_lens.astype(np.int32),
                  block_table)
        dev = StepTensors(*(torch.from_numpy(a).to(device) for a in arrays))  # zero-copy on the CPU
    else:
        dev = buffers.upload(input_ids, positions, slot_mapping, logits_indices, query_start_loc, seq_lens,
                             block_table, pad_to, pad_tokens_to, pad_query_len)
    if prev_sampled is not None:
        _copy_pending_tokens(dev.input_ids, states.prev_sample_index[rows], starts, prev_sampled)
    metadata = AttentionMetadata(
        num_actual_tokens=total,
        num_reqs=len(rows),
        query_start_loc=dev.query_start_loc,
        seq_lens=dev.seq_lens,
        block_table=dev.block_table,
        slot_mapping=dev.slot_mapping,
        max_query_len=int(num_sched.max()),
        max_seq_len=max(seq_lens_list),
        block_size=block_size,
        query_start_loc_cpu=query_start_loc[: len(rows) + 1].tolist(),
        seq_lens_cpu=seq_lens_list,
    )
    return ModelInput(
        input_ids=dev.input_ids,
        positions=dev.positions,
        attn_metadata=metadata,
        req_ids=req_ids,
        sample_states=[row_states[i] for i in sample_idx],
        logits_indices=dev.logits_indices,
        prompt_logprobs=_prompt_logprobs_slices(row_states, num_computed, starts, num_sched),
        padded_num_tokens=pad_to,
        piecewise_num_tokens=pad_tokens_to,
        drafts=step_drafts,
    )


def _drafted_rows(row_states: list[RowState], seq_lens: list[int], cu: np.ndarray,
                  drafts: dict[str, list[int]]) -> tuple[list[int], np.ndarray, list[list[int]]]:
    """(requests that sample, the rows whose logits are sampled, each one's drafts) of a step
    that checks drafts: a request with k drafts samples its last k + 1 rows."""
    sample_idx: list[int] = []
    step_drafts: list[list[int]] = []
    pieces: list[np.ndarray] = []
    for i, s in enumerate(row_states):
        d = drafts.get(s.req_id, [])
        if seq_lens[i] != s.num_tokens + s.num_pending + len(d):
            continue
        sample_idx.append(i)
        step_drafts.append(d)
        end = int(cu[i])
        pieces.append(np.arange(end - len(d) - 1, end, dtype=np.int64))
    logits_indices = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return sample_idx, logits_indices, step_drafts


def _copy_pending_tokens(input_ids: torch.Tensor, src: np.ndarray, starts: np.ndarray,
                         prev_sampled: torch.Tensor) -> None:
    """input_ids[starts[i]] = prev_sampled[src[i]] on the device, for the requests with src[i] >= 0
    (a request with a token in flight has exactly one scheduled token: that token's position)."""
    sel = np.flatnonzero(src >= 0)
    if len(sel) == 0:
        return
    dst, src = starts[sel], src[sel]
    n = len(sel)
    if dst[-1] == n - 1 and (src == np.arange(n)).all():  # steady decode: the same requests in the same order
        input_ids[:n].copy_(prev_sampled[:n])
        return
    device = input_ids.device
    input_ids.index_copy_(0, to_device(dst.tolist(), torch.int64, device),
                          prev_sampled.index_select(0, to_device(src.tolist(), torch.int64, device)))


def _prompt_logprobs_slices(
    row_states: list[RowState], num_computed: np.ndarray, starts: np.ndarray, num_sched: np.ndarray
) -> list[PromptLogprobsSlice]:
    """For each request that asked for prompt logprobs, the computed positions p < prompt_len - 1:
    their logits score prompt token p + 1."""
    slices = []
    for i, s in enumerate(row_states):
        k = s.sampling_params.prompt_logprobs
        if k is None:
            continue
        first = int(num_computed[i])
        last = min(first + int(num_sched[i]), s.num_prompt_tokens - 1)  # exclusive
        if last <= first:
            continue
        row0 = int(starts[i])
        slices.append(PromptLogprobsSlice(
            req_id=s.req_id,
            hidden_rows=slice(row0, row0 + last - first),
            target_token_ids=s.prompt_token_ids[first + 1 : last + 1],
            num_logprobs=k,
        ))
    return slices
