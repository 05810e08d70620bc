"""Logprobs of sampled tokens and of prompt tokens, as `LogprobsLists`.

Values are the log-softmax of the raw model logits (before bias, penalties, temperature or
truncation), which is what vLLM v1 reports by default. Column 0 holds the token of interest
(the sampled token, or the next prompt token); columns 1.. the top-k tokens.
"""
from __future__ import annotations

import torch

from pagedllm.outputs import LogprobsLists
from pagedllm.sample.sampling_metadata import to_device

# Prompt logprobs are computed this many positions at a time, to bound the [rows, V] temporaries.
_PROMPT_CHUNK = 512


def token_logprob_tensors(logits: torch.Tensor, token_ids: torch.Tensor,
                          num_logprobs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """On the logits' device: ids [P, 1 + k] (the token, then the top k), their logprobs [P, 1 + k]
    and the token's rank [P], for `token_ids` [P] against `logits` [P, V]."""
    logprobs = logits.float().log_softmax(dim=-1)  # [P, V]
    token_logprobs = logprobs.gather(1, token_ids.unsqueeze(1))  # [P, 1]
    # rank: how many tokens are at least as likely (vLLM counts ties against the token), so 1 = top.
    ranks = (logprobs >= token_logprobs).sum(dim=-1)  # [P]
    ids = token_ids.unsqueeze(1)  # [P, 1]
    values = token_logprobs
    if num_logprobs > 0:
        top = logprobs.topk(num_logprobs, dim=-1)  # [P, k] each
        ids = torch.cat([ids, top.indices], dim=1)  # [P, 1 + k]
        values = torch.cat([values, top.values], dim=1)  # [P, 1 + k]
    return ids, values, ranks


def compute_token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, num_logprobs: int) -> LogprobsLists:
    """Logprobs of `token_ids` [P] and the top `num_logprobs` tokens of each row of `logits` [P, V]."""
    return logprobs_lists(*token_logprob_tensors(logits, token_ids, num_logprobs))


def logprobs_lists(ids: torch.Tensor, values: torch.Tensor, ranks: torch.Tensor) -> LogprobsLists:
    """The host lists of token_logprob_tensors' output (host tensors: this does not wait on a GPU)."""
    return LogprobsLists(ids.tolist(), values.tolist(), ranks.tolist())


def compute_prompt_logprobs(logits: torch.Tensor, target_token_ids: list[int], num_logprobs: int) -> LogprobsLists:
    """Prompt logprobs: row p of `logits` [P, V] scores `target_token_ids[p]` (the next prompt token)."""
    assert logits.shape[0] == len(target_token_ids), (logits.shape, len(target_token_ids))
    targets = to_device(target_token_ids, torch.int64, logits.device)  # [P]
    out = LogprobsLists([], [], [])
    for start in range(0, len(target_token_ids), _PROMPT_CHUNK):
        end = start + _PROMPT_CHUNK
        out.extend(compute_token_logprobs(logits[start:end], targets[start:end], num_logprobs))
    return out


def split_sample_logprobs(lists: LogprobsLists, num_logprobs: list[int | None]) -> list[LogprobsLists | None]:
    """Cut the batch's logprobs (rows of the requests that asked, in order, each with the batch's
    max k columns) into one single-position `LogprobsLists` per row, keeping 1 + k columns."""
    out: list[LogprobsLists | None] = []
    j = 0
    for k in num_logprobs:
        if k is None:
            out.append(None)
            continue
        out.append(LogprobsLists([lists.token_ids[j][: 1 + k]], [lists.logprobs[j][: 1 + k]], [lists.ranks[j]]))
        j += 1
    return out
