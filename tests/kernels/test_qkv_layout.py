"""merged_qkv_rows: one view over q | k | v only when they are one tensor's adjacent column ranges."""
from __future__ import annotations

import torch

from pagedllm.kernels.qkv_layout import merged_qkv_rows


def _split(qkv: torch.Tensor, heads: int, kv_heads: int, head_size: int):
    t = qkv.shape[0]
    q, k, v = qkv.split([heads * head_size, kv_heads * head_size, kv_heads * head_size], dim=-1)
    return q.view(t, heads, head_size), k.view(t, kv_heads, head_size), v.view(t, kv_heads, head_size)


def test_views_of_one_qkv_output_merge_into_its_rows():
    qkv = torch.randn(5, (4 + 2 * 2) * 8)
    rows = merged_qkv_rows(*_split(qkv, 4, 2, 8))
    assert rows is not None and rows.shape == qkv.shape and rows.data_ptr() == qkv.data_ptr()
    rows.mul_(2)  # a view: writes land in the qkv output
    assert torch.equal(rows, qkv)


def test_separate_or_reordered_tensors_do_not_merge():
    q, k, v = _split(torch.randn(5, 64), 4, 2, 8)
    assert merged_qkv_rows(q.clone(), k, v) is None
    assert merged_qkv_rows(q, v, k) is None
    wider = torch.randn(5, 72)[:, :64]  # q | k | v followed by other columns: the row stride differs
    assert merged_qkv_rows(*_split(wider, 4, 2, 8)) is None
