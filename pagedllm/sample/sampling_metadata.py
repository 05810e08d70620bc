"""Batched sampling inputs for one step, built once from the per-request rows the runner hands over.

Everything that varies per row becomes a tensor here, in one pass over the rows, so the sampler
itself has no per-row Python loop except seeded generators and the logprobs lists. Features no
row uses are `None`, which lets the sampler skip them (an all-greedy batch without penalties or
logprobs is a bare argmax).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch

from pagedllm.sample.seeding import position_generator
from pagedllm.sampling_params import SamplingParams

_SAMPLING_EPS = 1e-5


@dataclass(slots=True)
class SamplingRequest:
    """One row to sample this step, as the model runner sees it."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # tokens generated so far and known on the host
    # masked (with params.all_stop_token_ids) while num_output_tokens < params.min_tokens, unless ignore_eos
    eos_token_id: int | None
    # Tokens sampled by a step still in flight (asynchronous scheduling; 0 or 1): generated but not
    # yet in output_token_ids. Penalties need their values, so the runner waits for them first.
    num_pending: int = 0

    @property
    def num_output_tokens(self) -> int:
        """Output tokens so far, pending ones included: the token sampled now has this index."""
        return len(self.output_token_ids) + self.num_pending


@dataclass(slots=True)
class SparseLogits:
    """A sparse set of (row, token) entries of the logits, with one value each."""

    rows: torch.Tensor  # [num_entries] int64
    token_ids: torch.Tensor  # [num_entries] int64
    values: torch.Tensor | None = None  # [num_entries] float32; None where the value is implied


@dataclass(slots=True)
class PenaltyMetadata:
    """Repetition / frequency / presence penalties; present when at least one row sets one."""

    repetition: torch.Tensor  # [N] float32 (1.0: none)
    frequency: torch.Tensor  # [N] float32 (0.0: none)
    presence: torch.Tensor  # [N] float32 (0.0: none)
    # (row, token) of every output token of the penalised rows (repeats kept: they are counted)
    output_tokens: SparseLogits
    # (row, token) of the prompts of rows with a repetition penalty (the only one that reads them)
    prompt_tokens: SparseLogits | None


@dataclass(slots=True)
class SamplingMetadata:
    num_rows: int
    vocab_size: int
    all_greedy: bool  # every row takes the argmax (temperature 0 or top_k 1)
    all_random: bool  # no row takes the argmax
    # [N] float32, 1.0 for greedy rows (their sample is replaced by the argmax); None if all greedy
    temperature: torch.Tensor | None
    greedy_mask: torch.Tensor | None  # [N] bool; None unless the batch mixes greedy and random rows
    top_k: torch.Tensor | None  # [N] int64, 0 for rows without top-k; None when no random row uses it
    max_top_k: int  # max of top_k (a Python int, so the sampler needs no device sync for it)
    top_p_rows: torch.Tensor | None  # [R] int64 rows with top_p < 1; None when none
    top_p: torch.Tensor | None  # [R] float32 top_p of those rows
    # max top_k of the top-p rows when every one of them also has a top_k (then top-p only needs
    # to sort that many values); None otherwise
    top_p_max_top_k: int | None
    min_p: torch.Tensor | None  # [N] float32, 0 for rows without it; None when no random row uses it
    generators: dict[int, torch.Generator]  # row -> generator for its (seed, output index)
    logit_bias: SparseLogits | None
    min_tokens_mask: SparseLogits | None  # (row, stop token) entries set to -inf
    penalties: PenaltyMetadata | None
    num_logprobs: list[int | None] = field(default_factory=list)  # [N] params.logprobs per row
    max_num_logprobs: int | None = None  # None when no row asks for logprobs

    @property
    def needs_logit_processing(self) -> bool:
        """Whether anything changes the logits before the argmax (so greedy is not a bare argmax)."""
        return self.logit_bias is not None or self.min_tokens_mask is not None or self.penalties is not None


def make_sampling_metadata(rows: list[SamplingRequest], vocab_size: int, device: torch.device) -> SamplingMetadata:
    """Batch the rows' parameters into tensors on `device` (one Python pass, one tensor per field)."""
    n = len(rows)
    greedy = [is_greedy(r.params) for r in rows]
    all_greedy = all(greedy)
    all_random = not any(greedy)
    num_logprobs = [r.params.logprobs for r in rows]
    given = [k for k in num_logprobs if k is not None]
    md = SamplingMetadata(
        num_rows=n, vocab_size=vocab_size, all_greedy=all_greedy, all_random=all_random,
        temperature=None, greedy_mask=None, top_k=None, max_top_k=0, top_p_rows=None, top_p=None,
        top_p_max_top_k=None, min_p=None,
        generators={},
        logit_bias=_make_logit_bias(rows, vocab_size, device),
        min_tokens_mask=_make_min_tokens_mask(rows, vocab_size, device),
        penalties=_make_penalties(rows, device),
        num_logprobs=num_logprobs,
        max_num_logprobs=max(given) if given else None,
    )
    if not all_greedy:
        _fill_random_fields(md, rows, greedy, device)
    return md


def to_device(values: Sequence[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of `values` on `device`. To a GPU it goes through pinned memory without blocking:
    a copy from pageable memory makes torch synchronize the stream, so the host would wait for
    the step's forward pass before it could go on preparing the sampler."""
    return _move(torch.tensor(values, dtype=dtype), device)


def _move(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    if getattr(device, "type", device) == "cpu":  # no torch.device built per tensor on the CPU path
        return t
    return t.pin_memory().to(device, non_blocking=True)


def is_greedy(p: SamplingParams) -> bool:
    """Whether a row with these parameters takes the argmax (temperature 0, or top_k 1)."""
    # top_k == 1 keeps only the argmax, so it is greedy; treating it so makes it exactly equal
    # to the argmax even with tied logits, and skips the sampling work.
    return p.temperature < _SAMPLING_EPS or p.top_k == 1


def _fill_random_fields(md: SamplingMetadata, rows: list[SamplingRequest], greedy: list[bool],
                        device: torch.device) -> None:
    temperature: list[float] = []
    top_k: list[int] = []
    min_p: list[float] = []
    top_p_rows: list[int] = []
    top_p: list[float] = []
    top_p_top_k: list[int] = []
    for i, (r, g) in enumerate(zip(rows, greedy)):
        p = r.params
        if g:  # neutral values: the row's sample is replaced by its argmax anyway
            temperature.append(1.0)
            top_k.append(0)
            min_p.append(0.0)
            continue
        temperature.append(p.temperature)
        top_k.append(p.top_k if p.top_k < md.vocab_size else 0)
        min_p.append(p.min_p)
        if p.top_p < 1.0:
            top_p_rows.append(i)
            top_p.append(p.top_p)
            top_p_top_k.append(top_k[-1])
        if p.seed is not None:
            md.generators[i] = position_generator(p.seed, r.num_output_tokens, device)
    md.temperature = to_device(temperature, torch.float32, device)
    if not md.all_random:
        md.greedy_mask = to_device(greedy, torch.bool, device)
    if any(top_k):
        md.top_k = to_device(top_k, torch.int64, device)
        md.max_top_k = max(top_k)
    if any(min_p):
        md.min_p = to_device(min_p, torch.float32, device)
    if top_p_rows:
        md.top_p_rows = to_device(top_p_rows, torch.int64, device)
        md.top_p = to_device(top_p, torch.float32, device)
        if all(top_p_top_k):
            md.top_p_max_top_k = max(top_p_top_k)


def _make_logit_bias(rows: list[SamplingRequest], vocab_size: int, device: torch.device) -> SparseLogits | None:
    entries = [(i, t, b) for i, r in enumerate(rows) if r.params.logit_bias
               for t, b in r.params.logit_bias.items() if 0 <= t < vocab_size]
    if not entries:
        return None
    row, tok, val = zip(*entries)
    return SparseLogits(to_device(row, torch.int64, device),
                        to_device(tok, torch.int64, device),
                        to_device(val, torch.float32, device))


def _make_min_tokens_mask(rows: list[SamplingRequest], vocab_size: int,
                          device: torch.device) -> SparseLogits | None:
    entries: list[tuple[int, int]] = []
    for i, r in enumerate(rows):
        p = r.params
        if r.num_output_tokens >= p.min_tokens:
            continue
        stop_ids = set(p.all_stop_token_ids)
        if not p.ignore_eos and r.eos_token_id is not None:
            stop_ids.add(r.eos_token_id)
        entries.extend((i, t) for t in stop_ids if 0 <= t < vocab_size)
    if not entries:
        return None
    row, tok = zip(*entries)
    return SparseLogits(to_device(row, torch.int64, device),
                        to_device(tok, torch.int64, device))


def has_penalty(p: SamplingParams) -> bool:
    """Whether the parameters set any of the repetition, frequency and presence penalties."""
    return p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0


def _make_penalties(rows: list[SamplingRequest], device: torch.device) -> PenaltyMetadata | None:
    penalised = [i for i, r in enumerate(rows) if has_penalty(r.params)]
    if not penalised:
        return None
    assert not any(rows[i].num_pending for i in penalised), "penalties need every output token on the host"
    repetition = [i for i in penalised if rows[i].params.repetition_penalty != 1.0]
    return PenaltyMetadata(
        repetition=to_device([r.params.repetition_penalty for r in rows], torch.float32, device),
        frequency=to_device([r.params.frequency_penalty for r in rows], torch.float32, device),
        presence=to_device([r.params.presence_penalty for r in rows], torch.float32, device),
        output_tokens=_flatten_token_lists(penalised, [rows[i].output_token_ids for i in penalised], device),
        prompt_tokens=(_flatten_token_lists(repetition, [rows[i].prompt_token_ids for i in repetition], device)
                       if repetition else None),
    )


def _flatten_token_lists(row_ids: list[int], token_lists: list[list[int]], device: torch.device) -> SparseLogits:
    """(row, token) pairs of ragged token lists, without padding them to one length."""
    lengths = torch.tensor([len(t) for t in token_lists], dtype=torch.int64)  # [M]
    rows = torch.repeat_interleave(torch.tensor(row_ids, dtype=torch.int64), lengths)  # [sum(lengths)]
    token_ids = torch.tensor(list(chain.from_iterable(token_lists)), dtype=torch.int64)  # [sum(lengths)]
    return SparseLogits(_move(rows, device), _move(token_ids, device))
