"""The sampler: processed logits -> one token per row (+ logprobs of the raw logits).

Pipeline (vLLM's order), each stage skipped when no row uses it:

    raw logits [N, V] --------------------------------------------> logprobs (log_softmax, top-k, rank)
       | logit_bias, min_tokens mask of stop/eos, penalties
       v
    argmax ---------------------------------------------------------> greedy rows (temperature 0, top_k 1)
       | / temperature, top-k, top-p, min-p
       v
    exp, cumsum, one uniform per row, searchsorted -------------------> random rows

Sampling inverts the CDF with one uniform number per row, so each row's randomness can come from
its own generator: seeded rows get one seeded by (seed, output index) (see seeding.py); the others
share the sampler's generator. (An exponential race needs V draws per row: ~10x slower on CPU.)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pagedllm.outputs import LogprobsLists
from pagedllm.sample.host_copy import HostCopy
from pagedllm.sample.logprobs import (
    compute_prompt_logprobs,
    logprobs_lists,
    split_sample_logprobs,
    token_logprob_tensors,
)
from pagedllm.sample.penalties import apply_penalties
from pagedllm.sample.sampling_metadata import SamplingMetadata, to_device
from pagedllm.sample.topk_topp import apply_min_p, apply_top_k, apply_top_p

__all__ = ["SampledBatch", "Sampler", "SamplerOutput", "compute_prompt_logprobs", "process_logits"]


@dataclass(slots=True)
class SamplerOutput:
    sampled_token_ids: list[int]  # [N]
    # [N] one single-position LogprobsLists per row that asked for logprobs, else None
    logprobs: list[LogprobsLists | None]


class SampledBatch:
    """A step's sampled tokens (and logprobs) as queued on the device; `result()` brings them to
    the host. Until then the host is free to prepare the next step (asynchronous scheduling),
    which reads `sampled` on the device for its input tokens."""

    def __init__(self, sampled: torch.Tensor, logprob_tensors: tuple[torch.Tensor, ...] | None,
                 num_logprobs: list[int | None]) -> None:
        self.sampled = sampled  # [N] int64 on the device
        self._num_logprobs = num_logprobs
        self._has_logprobs = logprob_tensors is not None
        self._copy = HostCopy([sampled, *(logprob_tensors or ())])
        self._result: SamplerOutput | None = None

    def result(self) -> SamplerOutput:
        if self._result is None:
            host = self._copy.wait()
            logprobs: list[LogprobsLists | None] = [None] * len(self._num_logprobs)
            if self._has_logprobs:
                logprobs = split_sample_logprobs(logprobs_lists(*host[1:]), self._num_logprobs)
            self._result = SamplerOutput(host[0].tolist(), logprobs)
        return self._result


class Sampler:
    def __init__(self, generator: torch.Generator | None = None,
                 inverse_cdf: Callable[..., torch.Tensor] | None = None) -> None:
        """generator: noise for unseeded rows; None uses torch's default generator of the logits'
        device. inverse_cdf: the platform's fused inverse-CDF stage, sample_from_logits(logits,
        u, inv_temperature=None) (Platform.inverse_cdf_stage: the C++ one on an AVX-512 CPU, two
        Triton launches on CUDA that read the logits once instead of the torch ops' five passes);
        None: torch ops. It runs at every batch size: a seeded request's draw must not switch
        stage with the size of its batch (the stages sum the CDF in different orders)."""
        self.generator = generator
        self.inverse_cdf = inverse_cdf

    def forward(self, logits: torch.Tensor, metadata: SamplingMetadata) -> SamplerOutput:
        """Sample one token per row of `logits` [N, V] float32. Does not modify `logits`."""
        return self.launch(logits, metadata).result()

    def launch(self, logits: torch.Tensor, metadata: SamplingMetadata) -> SampledBatch:
        """Queue the sampling of `logits` [N, V] float32 without waiting for its result."""
        assert logits.shape[0] == metadata.num_rows, (logits.shape, metadata.num_rows)
        sampled = self.sample(logits, metadata)  # [N] int64
        return SampledBatch(sampled, self._logprobs(logits, sampled, metadata), metadata.num_logprobs)

    def sample(self, logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
        """The sampled token of each row: [N] int64."""
        logits = process_logits(logits, md)
        if md.all_greedy:
            return greedy_tokens(logits)
        greedy = None if md.all_random else greedy_tokens(logits)  # [N]
        assert md.temperature is not None
        fused = self.inverse_cdf if logits.dtype == torch.float32 and logits.stride(-1) == 1 else None
        if fused is not None and not _truncates(md):
            # The fused stage divides by the temperature itself: no [N, V] pass for it. It reads the
            # logits and leaves them intact.
            sampled = fused(logits, self._uniforms(logits, md).view(-1), 1.0 / md.temperature)
        else:
            logits = logits / md.temperature.unsqueeze(1)  # a new tensor: the rest works in place
            _truncate(logits, md)
            sampled = self._random_sample(logits, md, fused)  # [N]
        if greedy is None:
            return sampled
        assert md.greedy_mask is not None
        return torch.where(md.greedy_mask, greedy, sampled)

    def distribution(self, logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
        """[N, V] float32: the distribution each row of `logits` is sampled from (processed
        logits, temperature, top-k, top-p, min-p, softmax; a greedy row is one-hot at its argmax).
        Speculative decoding's rejection rule compares these."""
        logits = process_logits(logits, md)
        if md.all_greedy:
            return _one_hot(greedy_tokens(logits), logits.shape[-1])
        assert md.temperature is not None
        scaled = logits / md.temperature.unsqueeze(1)
        _truncate(scaled, md)
        probs = scaled.softmax(dim=-1)
        if md.greedy_mask is not None:
            probs = torch.where(md.greedy_mask.unsqueeze(1), _one_hot(greedy_tokens(logits), logits.shape[-1]), probs)
        return probs

    def _random_sample(self, logits: torch.Tensor, md: SamplingMetadata,
                       fused: Callable[..., torch.Tensor] | None) -> torch.Tensor:
        """Inverse-CDF sampling: one uniform draw per row, so a row's randomness is one number
        from its own generator and the cost is an exp and a cumsum, not V random draws."""
        # Unnormalised probabilities: u is scaled by each row's total below, so the softmax's
        # division (its own pass over the row, the costliest of these) is not needed.
        u = self._uniforms(logits, md)
        if fused is not None:  # the same stages in one C++ call, or two Triton launches
            return fused(logits, u.view(-1))
        weights = logits.sub_(_row_max(logits)).exp_()  # [N, V], in place
        cdf = weights.cumsum_(dim=-1)  # [N, V]
        # Scale by the row's total so float rounding in the cumsum never lets u pass the end;
        # right=True skips zero-probability tokens (their cdf equals their predecessor's).
        u.mul_(cdf[:, -1:])
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)

    def _uniforms(self, logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
        """[N, 1] draws from U[0, 1): seeded rows from their own generators, the rest from ours."""
        u = torch.empty((md.num_rows, 1), dtype=torch.float32, device=logits.device)
        if len(md.generators) < md.num_rows:
            u.uniform_(generator=self.generator)
        for row, generator in md.generators.items():
            u[row].uniform_(generator=generator)
        return u

    def _logprobs(self, logits: torch.Tensor, sampled: torch.Tensor,
                  md: SamplingMetadata) -> tuple[torch.Tensor, ...] | None:
        """(ids, logprobs, ranks) of the rows that asked, with the batch's max k; None if none did."""
        if md.max_num_logprobs is None:
            return None
        rows = [i for i, k in enumerate(md.num_logprobs) if k is not None]
        if len(rows) < md.num_rows:
            index = to_device(rows, torch.int64, logits.device)
            logits, sampled = logits[index], sampled[index]
        return token_logprob_tensors(logits, sampled, md.max_num_logprobs)


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """[N, V] -> [N] int64, the first index of each row's largest logit (torch.argmax's answer).
    On the CPU through max(dim).indices: the same indices at 3-4x the speed (argmax of 256 rows
    of a 49k vocabulary takes 17 ms on two cores, max 4.7)."""
    if logits.is_cuda:
        return logits.argmax(dim=-1)
    return logits.max(dim=-1).indices


def _one_hot(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(tokens, vocab_size).float()


def _truncates(md: SamplingMetadata) -> bool:
    """Whether any row asks for top-k, top-p or min-p."""
    return md.top_k is not None or md.top_p_rows is not None or md.min_p is not None


def _row_max(logits: torch.Tensor) -> torch.Tensor:
    """[N, V] -> [N, 1] max of each row. On the GPU a row is reduced in up to 256 chunks first and
    then across them: torch reduces a single wide row with one block of threads, which at batch 1
    takes longer than the two small launches."""
    num_rows, vocab = logits.shape
    chunks = 256
    while vocab % chunks:
        chunks //= 2
    if not logits.is_cuda or num_rows >= 64 or chunks < 16:
        return logits.amax(dim=-1, keepdim=True)
    return logits.view(num_rows, chunks, vocab // chunks).amax(dim=-1).amax(dim=-1, keepdim=True)


def process_logits(logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
    """logit_bias, min_tokens masking, penalties: the stages that can change the argmax.

    Returns a new tensor [N, V] (or `logits` itself when no row uses them): the raw logits stay
    intact for logprobs.
    """
    if not md.needs_logit_processing:
        return logits
    logits = logits.clone()
    if md.logit_bias is not None:
        b = md.logit_bias
        assert b.values is not None
        logits.index_put_((b.rows, b.token_ids), b.values, accumulate=True)
    if md.min_tokens_mask is not None:
        m = md.min_tokens_mask
        # A device-side value: assigning a Python scalar copies it from host memory, which
        # makes torch synchronize a GPU stream.
        logits.index_put_((m.rows, m.token_ids), logits.new_full((1,), -math.inf))
    if md.penalties is not None:
        apply_penalties(logits, md.penalties)
    return logits


def _truncate(logits: torch.Tensor, md: SamplingMetadata) -> None:
    """top-k, then top-p, then min-p, in place on the temperature-scaled logits [N, V]."""
    if md.top_k is not None:
        apply_top_k(logits, md.top_k, md.max_top_k)
    if md.top_p_rows is not None:
        assert md.top_p is not None
        apply_top_p(logits, md.top_p_rows, md.top_p, md.top_p_max_top_k)
    if md.min_p is not None:
        apply_min_p(logits, md.min_p)
