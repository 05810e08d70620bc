"""Linear layers split over the tensor-parallel ranks (Megatron's scheme, as vLLM's).

  column-parallel (qkv, gate_up,    x [T, in] (whole on every rank) -> y [T, out / size], this
  MLA's q):
                                    rank's output features: no communication
  row-parallel (o, down):           x [T, in / size] (the column-parallel output) -> partial
                                    y [T, out], summed over the ranks: one all-reduce

So an attention block and an MLP each cost one all-reduce. Each rank loads only its rows
(column) or columns (row) of the checkpoint's tensors, cut by the layout its linear method reports
(LinearMethod.tensor_axes: packed INT4 words, FP8 scale blocks, a GGUF file's blocks), and the
method sees a smaller weight, nothing else.
With a single rank these are exactly Linear and MergedLinear.

The attention heads split with the q/k/v features: each rank runs num_heads / size query heads
and num_kv_heads / size KV heads; with fewer KV heads than ranks each KV head is replicated on
size / num_kv_heads ranks (every rank keeps one, the one its query heads read).
"""
from __future__ import annotations

import torch

from pagedllm.distributed.parallel_state import current_tensor_parallel, divide
from pagedllm.layers.linear import Linear, MergedLinear
from pagedllm.layers.linear_method import TensorAxes
from pagedllm.layers.tensor_shards import feature_range


class ColumnParallelLinear(Linear):
    """Linear whose output features are split over the ranks (MLA's query projection, by heads)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                 *, prefix: str = "") -> None:
        """out_features: the checkpoint's (all ranks together)."""
        self.tp = current_tensor_parallel()
        local_out = divide(out_features, self.tp.size, f"The output features of {prefix or 'a column-parallel layer'}")
        super().__init__(in_features, local_out, bias, dtype, prefix=prefix)

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if self.tp.size > 1:
            tensor = _output_rows(self, attr, tensor, self.tp.rank * self.out_features, self.out_features)
        super().load_hf_weight(attr, tensor, shard)


def _output_rows(layer: Linear, attr: str, tensor: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """Checkpoint tensor `attr`'s part for output features start .. start + size."""
    axes = TensorAxes(0, 1, None, 1) if attr == "bias" else layer.method.tensor_axes(attr, tensor)
    return feature_range(tensor, axes, "out", start, size, f"{attr} of {type(layer).__name__}")


class MergedColumnParallelLinear(MergedLinear):
    """MergedLinear whose every shard is split over the ranks by its output features (gate_up:
    this rank's gate and up columns side by side, so SiLU-and-mul runs on the rank's part)."""

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool, dtype: torch.dtype,
                 *, gated: bool = False, prefixes: dict[str, str] | None = None) -> None:
        """shard_sizes: each shard's output features in the checkpoint (all ranks together)."""
        self.tp = current_tensor_parallel()
        local = {name: divide(size, self.tp.size, f"The output features of {name}")
                 for name, size in shard_sizes.items()}
        super().__init__(in_features, local, bias, dtype, gated=gated, prefixes=prefixes)

    def _checkpoint_rows(self, shard: str) -> int:
        """The first row of the checkpoint's `shard` tensor that this rank holds."""
        return self.tp.rank * self.shard_offsets[shard][1]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if self.tp.size > 1 and shard in self.shard_offsets:
            tensor = _output_rows(self, attr, tensor, self._checkpoint_rows(shard), self.shard_offsets[shard][1])
        super().load_hf_weight(attr, tensor, shard)


class QKVParallelLinear(MergedColumnParallelLinear):
    """q, k and v projections, split by attention heads: `num_heads` and `num_kv_heads` are this
    rank's."""

    def __init__(self, in_features: int, head_size: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool, dtype: torch.dtype, *, prefix: str = "") -> None:
        """prefix: the attention block's HF name ("model.layers.0.self_attn")."""
        tp = current_tensor_parallel()
        self.num_heads = divide(total_num_heads, tp.size, "The number of attention heads")
        if total_num_kv_heads >= tp.size:
            self.num_kv_heads = divide(total_num_kv_heads, tp.size, "The number of KV heads")
        elif tp.size % total_num_kv_heads:
            raise ValueError(f"tensor_parallel_size ({tp.size}) must divide the number of KV heads "
                             f"({total_num_kv_heads}) or be a multiple of it.")
        else:
            self.num_kv_heads = 1
        self.total_num_kv_heads = total_num_kv_heads
        self.head_size = head_size
        q, kv = total_num_heads * head_size, max(total_num_kv_heads, tp.size) * head_size
        super().__init__(in_features, {"q": q, "k": kv, "v": kv}, bias, dtype,
                         prefixes={s: f"{prefix}.{s}_proj" for s in ("q", "k", "v")})

    def _checkpoint_rows(self, shard: str) -> int:
        if shard == "q":
            return super()._checkpoint_rows(shard)
        # This rank's first KV head. Replicated (fewer KV heads than ranks), it is the one its query
        # heads read: query head h reads KV head h // (heads / kv_heads).
        if self.total_num_kv_heads >= self.tp.size:
            first_head = self.tp.rank * self.num_kv_heads
        else:
            first_head = self.tp.rank * self.total_num_kv_heads // self.tp.size
        return first_head * self.head_size


class RowParallelLinear(Linear):
    """Linear whose input features are split over the ranks; each rank's partial product is
    summed by one all-reduce. The bias is added once (rank 0's; the others hold zeros)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                 *, prefix: str = "") -> None:
        """in_features: the checkpoint's (all ranks together)."""
        self.tp = current_tensor_parallel()
        local_in = divide(in_features, self.tp.size, f"The input features of {prefix or 'a row-parallel layer'}")
        super().__init__(local_in, out_features, bias, dtype, prefix=prefix)

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if self.tp.size > 1:
            if attr == "bias":
                tensor = tensor if self.tp.rank == 0 else torch.zeros_like(tensor)
            else:
                tensor = feature_range(tensor, self.method.tensor_axes(attr, tensor), "in",
                                       self.tp.rank * self.in_features, self.in_features,
                                       f"{attr} of {type(self).__name__}")
        super().load_hf_weight(attr, tensor, shard)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, in / size] -> [T, out]
        out = super().forward(x)
        return out if self.tp.size == 1 else self.tp.all_reduce_(out)

    def accumulate_(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual [T, out] += the layer's output, in place, with one all-reduce: rank 0 adds its
        partial product into the residual (the GEMM's epilogue), the others into zeros, and the
        sum over the ranks is the residual plus every partial product (the ranks' residual
        streams are equal)."""
        if self.tp.size == 1:
            return super().accumulate_(residual, x)
        if self.tp.rank != 0:
            residual.zero_()
        return self.tp.all_reduce_(super().accumulate_(residual, x))
