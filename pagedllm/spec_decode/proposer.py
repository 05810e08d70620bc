"""The proposer interface (methods are registered in config.py's PROPOSERS).

A proposer guesses each request's next tokens after a step's tokens reach the host; the runner
hands the guesses to the scheduler, which checks them in the request's next step (verifier.py).
One module per method; the runner knows only this interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pagedllm.sampling_params import SamplingParams
from pagedllm.spec_decode.config import PROPOSERS, SpeculativeConfig

if TYPE_CHECKING:
    import torch

    from pagedllm.attention.base import AttentionBackend
    from pagedllm.worker.cuda_graphs import CudaGraphRunner
    from pagedllm.worker.input_buffers import InputBuffers
    from pagedllm.worker.piecewise_graphs import PiecewiseGraphRunner
    from pagedllm.worker.request_states import RequestStates


@dataclass(slots=True)
class DraftRequest:
    """What a proposer reads of one request."""

    req_id: str
    # [num_tokens] int64, the prompt and the outputs so far: a view of the runner's row, to read
    # during propose() and not keep
    token_ids: np.ndarray
    num_prompt_tokens: int
    row: int  # its row in the runner's RequestStates (block table, token ids)
    sampling_params: SamplingParams | None = None  # for proposers that sample like the request


@dataclass
class ProposerRuntime:
    """What the worker gives a proposer that runs a model of its own over the requests' tokens."""

    device: torch.device
    backend: AttentionBackend  # the draft's own instance (its workspace is shaped for its heads)
    states: RequestStates | None  # the runner's rows: block tables (shared with the target) and tokens
    block_size: int
    max_model_len: int
    max_num_batched_tokens: int  # the most tokens one of its forward passes may take
    draft_model: Any = None  # models.common.DecoderForCausalLM
    # one per draft layer, the same block layout as the target's (a block id means the same
    # positions in both caches, so the scheduler's block tables serve both)
    draft_kv_caches: list[torch.Tensor] | None = None
    # CUDA: the runner's persistent input buffers (the draft's passes fill them between the
    # target's steps, on the same stream) and the draft's captured graphs reading them
    # (worker/cuda_graphs.py, worker/piecewise_graphs.py); None: eager passes, inputs built per pass
    buffers: InputBuffers | None = None
    draft_graphs: CudaGraphRunner | None = None
    draft_piecewise: PiecewiseGraphRunner | None = None
    # EAGLE-3: the persistent [max tokens, 3H] rows the target's layer taps write each step
    # (spec_decode/hidden_taps.py); None: a head reads the target's last hidden state
    aux_hidden: torch.Tensor | None = None
    # EAGLE: the head as a model of the runner's contract (models/eagle.py HeadStep), which the
    # draft graphs captured; its features buffer is filled before each pass
    head_step: Any = None


class Proposer(ABC):
    # Whether the runner hands it the target's hidden states of every step (observe_target)
    reads_target_hidden: ClassVar[bool] = False

    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.num_speculative_tokens = config.num_speculative_tokens

    @abstractmethod
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """Draft tokens for each request: at most num_speculative_tokens each, maybe none."""

    def draft_probs(self, req_id: str) -> torch.Tensor | None:
        """[num drafts proposed, V] the distribution each of the request's last drafts was sampled
        from; None for drafts that are fixed tokens (the default), checked exactly."""
        return None

    def observe_target(self, req_ids: list[str], starts: list[int], counts: list[int],
                       hidden: torch.Tensor, keep: bool = True) -> None:
        """A step's target hidden states [num_tokens, H] (only for reads_target_hidden): request
        i's counts[i] rows follow the rows of the requests before it, the first at position
        starts[i]. The rows are the step's own tensor, valid until the next step: keep copies.
        keep=False: no proposal follows this step (speculation off for the batch)."""

    def bind(self, runtime: ProposerRuntime) -> None:
        """The worker's device, cache and rows, before the first step (proposers that run no model
        ignore it)."""

    def finish_requests(self, req_ids: Iterable[str]) -> None:
        """These requests ended (finished or aborted); a proposer that keeps per-request state drops
        it here (and may keep their outputs to draw from)."""

    def reset_requests(self, req_ids: Iterable[str]) -> None:
        """These requests were preempted: their KV blocks are gone, and they come back later as
        new requests with the same tokens. A proposer with a cache of its own over them starts over."""


def make_proposer(config: SpeculativeConfig) -> Proposer:
    """The proposer of the config's method (the registry is spec_decode/config.py's PROPOSERS)."""
    proposer: Proposer = PROPOSERS.get(config.method)(config)
    return proposer
