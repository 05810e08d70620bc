"""Step inputs through the persistent pinned/device buffers, eager and padded for a CUDA graph."""
from __future__ import annotations

import numpy as np
import torch

from pagedllm.worker.input_buffers import InputBuffers
from pagedllm.worker.input_builder import build_model_input
from tests.helpers.runner_states import BLOCK, make_states

CUDA = torch.device("cuda")


def test_eager_step_through_buffers_equals_fresh_tensors():
    states = make_states(("a", list(range(10, 16)), [7, 3], 0), ("b", list(range(20, 25)), [5, 6], 4))
    fresh = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CUDA)
    buffers = InputBuffers(64, 8, 8, CUDA)
    for _ in range(2):  # the second step rewrites the mirrors after the first step's copies
        via = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CUDA, buffers)
        for name in ("input_ids", "positions", "logits_indices"):
            assert torch.equal(getattr(via, name), getattr(fresh, name)), name
        for name in ("query_start_loc", "seq_lens", "block_table", "slot_mapping"):
            assert torch.equal(getattr(via.attn_metadata, name), getattr(fresh.attn_metadata, name)), name


def test_decode_step_padded_for_a_graph():
    states = make_states(("a", [1, 2, 3, 4, 5], [2, 9], 4), ("b", [6, 7], [4], 1))
    buffers = InputBuffers(64, 8, 8, CUDA)
    inp = build_model_input(states, ["b", "a"], [1, 1], BLOCK, CUDA, buffers, pad_to=4)
    md = inp.attn_metadata
    assert inp.padded_num_tokens == 4
    assert md.num_actual_tokens == 2 and md.num_reqs == 2  # the real batch; the graph covers padding
    assert inp.input_ids.tolist() == [7, 5, 0, 0]
    assert inp.positions.tolist() == [1, 4, 0, 0]
    assert md.slot_mapping.tolist() == [17, 36, -1, -1]  # padded rows write no K/V
    assert md.seq_lens.tolist() == [2, 5, 1, 1]
    assert md.query_start_loc.tolist() == [0, 1, 2, 3, 4]
    table = md.block_table.cpu().numpy()
    assert table.shape == (4, 8)  # full width: the width the graph was captured with
    assert table[0, :1].tolist() == [4] and table[1, :2].tolist() == [2, 9]
    assert not np.any(table[2:])
    assert inp.logits_indices.tolist() == [0, 1]


def test_prompt_step_padded_for_piecewise_graphs():
    states = make_states(("a", list(range(10, 16)), [7, 3], 0), ("b", list(range(20, 25)), [5, 6], 4))
    fresh = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CUDA)
    buffers = InputBuffers(64, 8, 8, CUDA)
    buffers.input_ids.fill_(99)  # stale values from an earlier, longer step
    buffers.positions.fill_(99)
    inp = build_model_input(states, ["a", "b"], [6, 1], BLOCK, CUDA, buffers, pad_tokens_to=16)
    assert inp.piecewise_num_tokens == 16 and inp.padded_num_tokens is None
    assert inp.input_ids.tolist() == fresh.input_ids.tolist() + [0] * 9  # padding: token 0 at position 0
    assert inp.positions.tolist() == fresh.positions.tolist() + [0] * 9
    md, want = inp.attn_metadata, fresh.attn_metadata
    assert md.num_actual_tokens == 7 and md.num_reqs == 2  # attention sees the real step only
    for name in ("query_start_loc", "seq_lens", "block_table", "slot_mapping"):
        assert torch.equal(getattr(md, name), getattr(want, name)), name


def test_verify_step_padded_for_a_graph():
    """Two requests of 3 tokens each (a token and 2 drafts) padded to a verify graph of 4."""
    buffers = InputBuffers(64, 8, 8, CUDA)
    ids = np.array([5, 6, 7, 8, 9, 10], dtype=np.int64)
    positions = np.array([3, 4, 5, 1, 2, 3], dtype=np.int64)
    slots = np.array([3, 4, 5, 17, 18, 19], dtype=np.int64)
    table = np.zeros((2, 8), dtype=np.int32)
    table[0, 0], table[1, 0] = 0, 1
    dev = buffers.upload(ids, positions, slots, np.arange(6), np.array([0, 3, 6], dtype=np.int32),
                         np.array([6, 4], dtype=np.int32), table, 4, None, query_len=3)
    assert dev.input_ids.tolist() == [5, 6, 7, 8, 9, 10] + [0] * 6
    assert dev.positions.tolist() == [3, 4, 5, 1, 2, 3] + [0] * 6
    assert dev.slot_mapping.tolist() == [3, 4, 5, 17, 18, 19] + [-1] * 6
    assert dev.seq_lens.tolist() == [6, 4, 3, 3]  # padding requests see only their own 3 tokens
    assert dev.query_start_loc.tolist() == [0, 3, 6, 9, 12]
    assert dev.block_table.shape == (4, 8) and not dev.block_table[2:].any()
