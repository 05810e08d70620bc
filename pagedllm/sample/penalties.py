"""Repetition, frequency and presence penalties (vLLM / OpenAI semantics).

- repetition (CTRL paper, as in HF and vLLM): for every token seen in the prompt or the output,
  a positive logit is divided by the penalty and a negative one multiplied by it.
- frequency: logit -= frequency_penalty * (times the token appears in the output).
- presence: logit -= presence_penalty * (1 if the token appears in the output).
"""
from __future__ import annotations

import torch

from pagedllm.sample.sampling_metadata import PenaltyMetadata, SparseLogits


def apply_penalties(logits: torch.Tensor, pm: PenaltyMetadata) -> None:
    """Penalise `logits` [N, V] in place, on the rows of `pm` only."""
    sub = logits if pm.rows is None else logits[pm.rows]  # [M, V] (a copy when rows is set)
    num_rows, vocab_size = sub.shape
    counts = _token_counts(pm.output_tokens, num_rows, vocab_size, sub.device)  # [M, V] float32
    if pm.prompt_tokens is not None:
        seen = counts > 0  # [M, V] bool
        seen[pm.prompt_tokens.rows, pm.prompt_tokens.token_ids] = True
        rep = pm.repetition.unsqueeze(1)  # [M, 1]
        penalised = torch.where(sub > 0, sub / rep, sub * rep)
        sub = torch.where(seen, penalised, sub)
    sub = sub - pm.frequency.unsqueeze(1) * counts
    sub = sub - pm.presence.unsqueeze(1) * (counts > 0).to(sub.dtype)
    if pm.rows is None:
        logits.copy_(sub)
    else:
        logits[pm.rows] = sub


def _token_counts(tokens: SparseLogits, num_rows: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    counts = torch.zeros(num_rows, vocab_size, dtype=torch.float32, device=device)  # [M, V]
    ones = torch.ones(tokens.token_ids.shape[0], dtype=torch.float32, device=device)
    counts.index_put_((tokens.rows, tokens.token_ids), ones, accumulate=True)
    return counts
