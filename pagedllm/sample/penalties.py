"""Repetition, frequency and presence penalties (vLLM / OpenAI semantics).

- repetition (CTRL paper, as in HF and vLLM): for every token seen in the prompt or the output,
  a positive logit is divided by the penalty and a negative one multiplied by it.
- frequency: logit -= frequency_penalty * (times the token appears in the output).
- presence: logit -= presence_penalty * (1 if the token appears in the output).

Only the (row, token) entries that occur in a prompt or output change, so they are updated
sparsely, by flat index row * V + token: a few thousand entries instead of dense [N, V] count
tensors and several passes over the whole logits.
"""
from __future__ import annotations

import torch

from pagedllm.sample.sampling_metadata import PenaltyMetadata, SparseLogits


def apply_penalties(logits: torch.Tensor, pm: PenaltyMetadata) -> None:
    """Penalise `logits` [N, V] (contiguous) in place."""
    if logits.is_cuda:
        _apply_penalties_dense(logits, pm)
        return
    vocab_size = logits.shape[1]
    flat = logits.view(-1)  # [N * V]
    output_keys = _flat_keys(pm.output_tokens, vocab_size)  # [T] with repeats
    if pm.prompt_tokens is not None:
        seen = torch.cat([_flat_keys(pm.prompt_tokens, vocab_size), output_keys]).unique()  # [S]
        values = flat[seen]  # [S]
        penalty = pm.repetition[seen // vocab_size]  # [S]
        flat[seen] = torch.where(values > 0, values / penalty, values * penalty)
    keys, counts = output_keys.unique(return_counts=True)  # [U] each
    row = keys // vocab_size  # [U]
    flat[keys] -= pm.frequency[row] * counts.to(flat.dtype) + pm.presence[row]


def _flat_keys(tokens: SparseLogits, vocab_size: int) -> torch.Tensor:
    return tokens.rows * vocab_size + tokens.token_ids  # [T] int64


def _apply_penalties_dense(logits: torch.Tensor, pm: PenaltyMetadata) -> None:
    """The same with dense [N, V] counts: `unique` would make the host wait for the GPU (its
    output size is data-dependent), while a scatter-add and a few elementwise passes queue up
    without a sync and cost little on a GPU."""
    counts = torch.zeros_like(logits)  # [N, V] occurrences in the output
    out = pm.output_tokens
    counts.index_put_((out.rows, out.token_ids), torch.ones_like(out.rows, dtype=logits.dtype), accumulate=True)
    if pm.prompt_tokens is not None:
        seen = counts > 0  # [N, V]
        seen.index_put_((pm.prompt_tokens.rows, pm.prompt_tokens.token_ids),
                        torch.ones_like(pm.prompt_tokens.rows, dtype=torch.bool))
        penalty = pm.repetition.unsqueeze(1)  # [N, 1]
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        torch.where(seen, penalised, logits, out=logits)
    logits -= pm.frequency.unsqueeze(1) * counts + pm.presence.unsqueeze(1) * (counts > 0)
