"""GGUF weights kept quantized (CPU): the linear and embedding methods over the C++ kernels.

A GGUF tensor reaches a layer as a GGUFTensor, its blocks as stored in the file. The method keeps
the blocks until loading ends, then repacks them once into the kernels' layout
(pagedllm/kernels/cpu/quant.py: the same bytes as the file, arranged for the integer dot
products). At run time a linear layer quantizes its input rows to int8 per block and takes integer
dot products with the weight's blocks (batch-1 decode reads the file's bytes, not float32's four
per weight); the embedding dequantizes the rows it gathers.

A merged layer (qkv, gate_up) may hold shards of different types (a Q4_K_M file keeps some v
projections in Q6_K): shards of one type are repacked together and run as one GEMM, otherwise
each shard runs on its own into its columns of the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pagedllm.kernels.cpu import quant
from pagedllm.layers.embedding import EmbeddingMethod, EmbeddingSpec
from pagedllm.layers.linear_method import LinearMethod, LinearSpec

if TYPE_CHECKING:
    from pagedllm.layers.embedding import VocabEmbedding
    from pagedllm.layers.linear import Linear

QUANTIZATION = "gguf"


@dataclass(frozen=True)
class GGUFTensor:
    """A quantized GGUF tensor as the loader hands it over: uint8 [rows, row_bytes] blocks."""

    data: torch.Tensor
    ggml_type: int
    rows: int
    cols: int

    @property
    def type_name(self) -> str:
        return quant.quant_type(self.ggml_type).name

    def permute_rows(self, order: torch.Tensor) -> GGUFTensor:
        """The same tensor with its rows (whole rows of blocks) reordered."""
        return GGUFTensor(self.data[order].contiguous(), self.ggml_type, self.rows, self.cols)

    def narrow(self, dim: int, start: int, size: int) -> GGUFTensor:
        """Rows (dim 0) or columns (dim 1, whole blocks only) start .. start + size, as
        torch.Tensor.narrow: a tensor-parallel rank's part of the weight."""
        if dim == 0:
            return GGUFTensor(self.data.narrow(0, start, size), self.ggml_type, size, self.cols)
        qtype = quant.quant_type(self.ggml_type)
        if start % qtype.block_size or size % qtype.block_size:
            raise ValueError(f"A {qtype.name} weight of {self.cols} columns cannot be split at columns {start}.."
                             f"{start + size}: its blocks hold {qtype.block_size} values each (choose a "
                             "tensor_parallel_size that splits the rows into whole blocks).")
        first, width = start // qtype.block_size * qtype.type_size, size // qtype.block_size * qtype.type_size
        return GGUFTensor(self.data.narrow(1, first, width).contiguous(), self.ggml_type, self.rows, size)

    def pad_rows(self, rows: int) -> GGUFTensor:
        """The tensor with zero blocks appended up to `rows` rows (zero blocks dequantize to 0)."""
        extra = self.data.new_zeros(rows - self.rows, self.data.shape[1])
        return GGUFTensor(torch.cat([self.data, extra]), self.ggml_type, rows, self.cols)


def _check(tensor: Any, rows: int, cols: int, what: str) -> GGUFTensor:
    if not isinstance(tensor, GGUFTensor):
        raise ValueError(f"{what} is quantized in this checkpoint's header but came as {type(tensor).__name__}.")
    if (tensor.rows, tensor.cols) != (rows, cols):
        raise ValueError(f"Shape mismatch loading {what}: checkpoint has {(tensor.rows, tensor.cols)}, "
                         f"model expects {(rows, cols)}.")
    return tensor


class GGUFLinearMethod(LinearMethod):
    """x [M, K] float32 @ W^T with W in GGUF blocks. The packed weights are buffers of the layer
    (`gguf_packed_<i>`), so the model's byte count and .to() see them."""

    def __init__(self, spec: LinearSpec) -> None:
        super().__init__(spec)
        if spec.dtype != torch.float32:
            raise ValueError(f"Quantized GGUF weights run with float32 activations on the CPU, not {spec.dtype}; "
                             "use dtype='float32' (the CPU default) or quantization='none'.")
        self._loaded: dict[int, GGUFTensor] = {}  # output row start -> the shard's blocks
        self.groups: list[tuple[int, int, quant.PackedWeight]] = []  # (start, size, weight), in output order

    def create_weights(self, layer: Linear) -> None:
        pass  # the blocks arrive whole at load; nothing to allocate ahead

    def load_weight(self, layer: Linear, tensor: Any, start: int, size: int) -> None:
        self._loaded[start] = _check(tensor, size, self.spec.in_features, f"linear weight rows {start}..{start + size}")

    def process_weights_after_loading(self, layer: Linear) -> None:
        shards = [self._loaded[s] for s in sorted(self._loaded)]
        assert sum(t.rows for t in shards) == self.spec.out_features, "every shard loaded (the loader checks)"
        if len({t.ggml_type for t in shards}) == 1:  # one GEMM over all of them
            shards = [GGUFTensor(torch.cat([t.data for t in shards]), shards[0].ggml_type,
                                 self.spec.out_features, self.spec.in_features)]
        start = 0
        for i, shard in enumerate(shards):
            packed = quant.repack(shard.data, shard.ggml_type, shard.rows, shard.cols)
            layer.register_buffer(f"gguf_packed_{i}", packed.data, persistent=False)
            self.groups.append((start, shard.rows, packed))
            start += shard.rows
        self._loaded.clear()

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return self.apply(layer, x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        if len(self.groups) == 1:
            return quant.linear(x, self.groups[0][2], layer.bias)
        out = x.new_empty(x.shape[0], self.spec.out_features)
        for start, size, packed in self.groups:
            bias = None if layer.bias is None else layer.bias[start:start + size]
            out[:, start:start + size] = quant.linear(x, packed, bias)
        return out

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if len(self.groups) == 1 and x.dim() == 2 and residual.is_contiguous():
            return quant.linear(x, self.groups[0][2], layer.bias, residual)  # added in the GEMM's store
        return residual.add_(self.apply(layer, x))


class GGUFEmbeddingMethod(EmbeddingMethod):
    def __init__(self, spec: EmbeddingSpec) -> None:
        super().__init__(spec)
        if spec.dtype != torch.float32:
            raise ValueError(f"A quantized GGUF embedding gives float32 rows on the CPU, not {spec.dtype}; "
                             "use dtype='float32' (the CPU default) or quantization='none'.")
        self._loaded: GGUFTensor | None = None
        self.packed: quant.PackedWeight | None = None

    def create_weights(self, layer: VocabEmbedding) -> None:
        pass

    def load_weight(self, layer: VocabEmbedding, tensor: Any) -> None:
        self._loaded = _check(tensor, self.spec.vocab_size, self.spec.hidden_size, "the embedding table")

    def process_weights_after_loading(self, layer: VocabEmbedding) -> None:
        assert self._loaded is not None, "the embedding was loaded (the loader checks)"
        t, self._loaded = self._loaded, None
        self.packed = quant.repack(t.data, t.ggml_type, t.rows, t.cols)
        layer.register_buffer("gguf_packed", self.packed.data, persistent=False)

    def embed(self, layer: VocabEmbedding, input_ids: torch.Tensor) -> torch.Tensor:
        assert self.packed is not None, "process_weights_after_loading() packs the table first"
        return quant.embedding(input_ids, self.packed)

    def tied_weight(self, layer: VocabEmbedding) -> Any:
        assert self._loaded is not None, "a tied head loads from the table before it is packed"
        return self._loaded


def packed_bytes(module: nn.Module) -> int:
    """Bytes of the packed GGUF weights held by a module's layers."""
    return sum(b.numel() * b.element_size() for name, b in module.named_buffers() if "gguf_packed" in name)
