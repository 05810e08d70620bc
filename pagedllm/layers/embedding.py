"""Token embedding and LM head.

The LM head keeps the fast [hidden, vocab] layout of layers/linear.py. With tied embeddings that
layout differs from the embedding's [vocab, hidden] rows, so the head holds its own transposed
copy (filled from the same tensor) rather than a shared parameter: it costs vocab*hidden more
memory and buys the faster decode matmul.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pagedllm.layers.linear import Linear
from pagedllm.layers.loadable import HFWeightLoadable, copy_checked, new_param


class VocabEmbedding(HFWeightLoadable):
    def __init__(self, vocab_size: int, hidden_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = new_param(vocab_size, hidden_size, dtype=dtype)  # [V, H]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        return F.embedding(input_ids, self.weight)

    def hf_weight_keys(self) -> list[tuple[str, str | None]]:
        return [("weight", None)]

    def load_hf_weight(self, attr: str, tensor: torch.Tensor, shard: str | None = None) -> None:
        if attr != "weight" or shard is not None:
            raise ValueError(f"Unexpected embedding parameter {attr!r}.")
        copy_checked(self.weight, tensor, "embedding weight")


class LMHead(Linear):
    """hidden [N, H] -> logits [N, V] in float32 (sampling wants full precision)."""

    def __init__(self, hidden_size: int, vocab_size: int, dtype: torch.dtype) -> None:
        super().__init__(hidden_size, vocab_size, bias=False, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden).float()

    def tie_to(self, embedding: VocabEmbedding) -> None:
        """Fill from the (already loaded) input embedding, for tie_word_embeddings models."""
        self.load_hf_weight("weight", embedding.weight)
