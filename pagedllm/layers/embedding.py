"""Token embedding and LM head.

The embedding holds an EmbeddingMethod as a linear layer holds a LinearMethod: the platform picks
it from the table's stored format (unquantized, or a quantized GGUF table whose gathered rows are
dequantized, layers/gguf_weights.py).

The LM head is a Linear: it keeps the fast [hidden, vocab] layout of layers/linear.py. With tied
embeddings that layout differs from the embedding's [vocab, hidden] rows, so the head holds its own
copy (filled from the same tensor) rather than a shared parameter: it costs vocab*hidden more
memory and buys the faster decode matmul.

Under tensor parallelism (distributed/parallel_state.py) both split the vocabulary: each rank holds
ceil(vocab / size) rows (the last rank's padded with zeros). The embedding looks up the ids in its
range and the ranks' rows are summed (one all-reduce); the head's logits are gathered, so every
rank samples from the whole vocabulary (and samples the same tokens).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm.distributed.parallel_state import TensorParallelGroup, current_pipeline_stage, current_tensor_parallel
from pagedllm.layers.layer_kernels import current_layer_kernels
from pagedllm.layers.linear import Linear
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param
from pagedllm.layers.tensor_shards import row_range


def vocab_rows(vocab_size: int, tp: TensorParallelGroup) -> tuple[int, int]:
    """(first row, rows) of the vocabulary that rank tp.rank holds; every rank holds as many."""
    rows = -(-vocab_size // tp.size)
    return tp.rank * rows, rows


@dataclass(frozen=True)
class EmbeddingSpec:
    """What the platform chooses an embedding's method from."""

    vocab_size: int
    hidden_size: int
    dtype: torch.dtype
    quantization: str | None = None  # the checkpoint's scheme for the table ("gguf"), None: unquantized
    format: str = ""  # its stored format under that scheme ("Q8_0")


class EmbeddingMethod(ABC):
    """How an embedding table is stored and its rows are read. Life as a LinearMethod's:
    create_weights -> load_weight -> process_weights_after_loading -> embed."""

    def __init__(self, spec: EmbeddingSpec) -> None:
        self.spec = spec

    @abstractmethod
    def create_weights(self, layer: VocabEmbedding) -> None:
        """Register the table's parameters on the layer (uninitialised)."""

    @abstractmethod
    def load_weight(self, layer: VocabEmbedding, tensor: Any) -> None:
        """Take the checkpoint's table ([vocab, hidden] as HF stores it, or the stored blocks)."""

    def process_weights_after_loading(self, layer: VocabEmbedding) -> None:
        """Repack the loaded table for `embed` (a no-op where it is read as loaded)."""

    @abstractmethod
    def embed(self, layer: VocabEmbedding, input_ids: torch.Tensor) -> torch.Tensor:
        """[T] token ids -> [T, hidden] rows in the model's dtype."""

    @abstractmethod
    def tied_weight(self, layer: VocabEmbedding) -> Any:
        """The loaded table as a tied LM head loads it (load_hf_weight("weight", ...)); valid
        until process_weights_after_loading."""


class UnquantizedEmbeddingMethod(EmbeddingMethod):
    def create_weights(self, layer: VocabEmbedding) -> None:
        layer.weight = new_param(self.spec.vocab_size, self.spec.hidden_size, dtype=self.spec.dtype)  # [V, H]

    def load_weight(self, layer: VocabEmbedding, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"The embedding expects a float tensor, got {type(tensor).__name__}.")
        copy_checked(layer.weight, tensor, "embedding weight")

    def embed(self, layer: VocabEmbedding, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, layer.weight)

    def tied_weight(self, layer: VocabEmbedding) -> Any:
        return layer.weight


class VocabEmbedding(HFWeightLoadable):
    weight: nn.Parameter  # the unquantized method's table [V, H]

    def __init__(self, vocab_size: int, hidden_size: int, dtype: torch.dtype, prefix: str = "") -> None:
        """prefix: the table's HF name ("model.embed_tokens"), by which its stored format is found."""
        super().__init__()
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.tp = current_tensor_parallel()
        self.first_row, self.num_rows = vocab_rows(vocab_size, self.tp)  # this rank's part of the table
        kernels = current_layer_kernels()
        quantization, formats = kernels.formats_of([f"{prefix}.weight"] if prefix else [])
        spec = EmbeddingSpec(self.num_rows, hidden_size, dtype, quantization, formats[0] if formats else "")
        factory = kernels.embedding_method or UnquantizedEmbeddingMethod
        self.method: EmbeddingMethod = factory(spec)
        self.method.create_weights(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        if self.tp.size == 1:
            return self.method.embed(self, input_ids)
        local = input_ids - self.first_row
        outside = (local < 0) | (local >= self.num_rows)
        rows = self.method.embed(self, local.masked_fill(outside, 0))
        return self.tp.all_reduce_(rows.masked_fill_(outside.unsqueeze(-1), 0))

    def process_weights_after_loading(self) -> None:
        self.method.process_weights_after_loading(self)

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [("weight", None)]

    def load_hf_weight(self, attr: str, tensor: Any, shard: str | None = None) -> None:
        if attr != "weight" or shard is not None:
            raise ValueError(f"Unexpected embedding parameter {attr!r}.")
        if self.tp.size > 1:
            tensor = row_range(tensor, self.first_row, self.num_rows)
        self.method.load_weight(self, tensor)


class LMHead(Linear):
    """hidden [N, H] -> logits [N, V] in float32 (sampling wants full precision)."""

    def __init__(self, hidden_size: int, vocab_size: int, dtype: torch.dtype, prefix: str = "") -> None:
        self.tp = current_tensor_parallel()
        self.stage = current_pipeline_stage()  # the last one: its logits go to the others (layers/pipeline.py)
        self.vocab_size = vocab_size
        self.first_row, rows = vocab_rows(vocab_size, self.tp)
        super().__init__(hidden_size, rows, bias=False, dtype=dtype, prefix=prefix)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().forward(hidden)
        if self.tp.size > 1:  # the ranks' columns side by side, the padding cut off
            logits = self.tp.all_gather(logits, dim=-1)[..., :self.vocab_size]
        return self.stage.broadcast_from_last(logits.float().contiguous())

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if self.tp.size > 1:
            tensor = row_range(tensor, self.first_row, self.out_features)
        super().load_hf_weight(attr, tensor, shard)

    def tie_to(self, embedding: VocabEmbedding) -> None:
        """Fill from the (already loaded) input embedding, for tie_word_embeddings models: this
        rank's rows, which are the embedding's."""
        Linear.load_hf_weight(self, "weight", embedding.method.tied_weight(embedding))
