"""Token embedding and LM head.

The embedding holds an EmbeddingMethod as a linear layer holds a LinearMethod: the platform picks
it from the table's stored format (unquantized, or a quantized GGUF table whose gathered rows are
dequantized, layers/gguf_weights.py).

The LM head is a Linear: it keeps the fast [hidden, vocab] layout of layers/linear.py. With tied
embeddings that layout differs from the embedding's [vocab, hidden] rows, so the head holds its own
copy (filled from the same tensor) rather than a shared parameter: it costs vocab*hidden more
memory and buys the faster decode matmul.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pagedllm.layers.layer_kernels import current_layer_kernels
from pagedllm.layers.linear import Linear
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param


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
        kernels = current_layer_kernels()
        quantization, formats = kernels.formats_of([f"{prefix}.weight"] if prefix else [])
        spec = EmbeddingSpec(vocab_size, hidden_size, dtype, quantization, formats[0] if formats else "")
        factory = kernels.embedding_method or UnquantizedEmbeddingMethod
        self.method: EmbeddingMethod = factory(spec)
        self.method.create_weights(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        return self.method.embed(self, input_ids)

    def process_weights_after_loading(self) -> None:
        self.method.process_weights_after_loading(self)

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [("weight", None)]

    def load_hf_weight(self, attr: str, tensor: Any, shard: str | None = None) -> None:
        if attr != "weight" or shard is not None:
            raise ValueError(f"Unexpected embedding parameter {attr!r}.")
        self.method.load_weight(self, tensor)


class LMHead(Linear):
    """hidden [N, H] -> logits [N, V] in float32 (sampling wants full precision)."""

    def __init__(self, hidden_size: int, vocab_size: int, dtype: torch.dtype, prefix: str = "") -> None:
        super().__init__(hidden_size, vocab_size, bias=False, dtype=dtype, prefix=prefix)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden).float()

    def tie_to(self, embedding: VocabEmbedding) -> None:
        """Fill from the (already loaded) input embedding, for tie_word_embeddings models."""
        self.load_hf_weight("weight", embedding.method.tied_weight(embedding))
