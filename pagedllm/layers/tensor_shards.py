"""A tensor-parallel rank's part of a checkpoint tensor: a range of its rows (output features, or
vocabulary entries) or of its columns (input features), for float tensors and a GGUF file's
quantized blocks alike (both have `narrow`; GGUFTensor also `pad_rows`)."""
from __future__ import annotations

from typing import Any

import torch

from pagedllm.layers.linear_method import TensorAxes


def narrow(tensor: Any, dim: int, start: int, size: int) -> Any:
    """tensor[start:start + size] along `dim` (0: rows, 1: columns)."""
    return tensor.narrow(dim, start, size)


def row_range(tensor: Any, start: int, size: int) -> Any:
    """Rows start .. start + size, zero rows past the tensor's end (a vocabulary that the ranks
    split into equal parts, the last one padded)."""
    rows = tensor.shape[0] if isinstance(tensor, torch.Tensor) else tensor.rows
    taken = max(0, min(size, rows - start))
    part = narrow(tensor, 0, min(start, rows), taken)
    if taken == size:
        return part
    if isinstance(tensor, torch.Tensor):
        return torch.cat([part, part.new_zeros(size - taken, *part.shape[1:])])
    return part.pad_rows(size)


def feature_range(tensor: Any, axes: TensorAxes, axis: str, start: int, size: int, what: str) -> Any:
    """A checkpoint tensor's part for features start .. start + size of the weight's `axis` ("out"
    or "in"), by the layout its linear method reports; the tensor itself where it is the same for
    every part (a per-tensor scale)."""
    dim, unit = (axes.out_dim, axes.out_unit) if axis == "out" else (axes.in_dim, axes.in_unit)
    if dim is None:
        return tensor
    if start % unit or size % unit:
        raise ValueError(f"{what}: a rank's {axis}put features {start}..{start + size} do not split its entries of "
                         f"{unit} features (choose a tensor_parallel_size that does).")
    return narrow(tensor, dim, start // unit, size // unit)
