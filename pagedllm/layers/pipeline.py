"""What a pipeline stage holds in place of the layers other stages hold (pipeline parallelism).

A model built for one stage of several (distributed/parallel_state.PipelineStage) keeps its module
tree and names, so checkpoints load by name and the attention layers keep their numbers; the parts
it does not hold are these stand-ins, which carry the hidden states between the stages:

  stage 0:      embedding -> its layers -> PipelineOutput (sends the hidden states on)
  stage s:      PipelineInput (receives them) -> its layers -> PipelineOutput
  last stage:   PipelineInput -> its layers -> norm -> LM head (logits broadcast to every stage)

Every stage computes (rather, receives) the same logits, so every rank samples the same tokens and
keeps the same request state; the executor reads the step's output from the last stage. A stage
waits for the last one's logits before its step ends: stages hold their share of the weights but
do not yet overlap in time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pagedllm.distributed.parallel_state import current_pipeline_stage


class OtherStageModule(nn.Module):
    """A part of the model that another pipeline stage holds: its checkpoint tensors are not
    this rank's to load (models/param_loading.py skips them)."""


class AbsentLayer(OtherStageModule):
    """A decoder layer of another stage (never called: the model runs its stage's layers only)."""

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("a decoder layer of another pipeline stage was called")


class PipelineInput(OtherStageModule):
    """The embedding's place after the first stage: the previous stage's hidden states."""

    def __init__(self, hidden_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.stage = current_pipeline_stage()
        self.hidden_size, self.dtype = hidden_size, dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        hidden = torch.empty(input_ids.shape[0], self.hidden_size, dtype=self.dtype, device=input_ids.device)
        return self.stage.recv_prev(hidden)


class PipelineOutput(OtherStageModule):
    """The final norm's place before the last stage: the hidden states go to the next stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = current_pipeline_stage()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [T, H], returned as is
        self.stage.send_next(hidden)
        return hidden


class PipelineLogits(OtherStageModule):
    """The LM head's place before the last stage: the last stage's logits of the same rows."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.stage = current_pipeline_stage()
        self.vocab_size = vocab_size

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, H] -> [N, V] float32
        logits = torch.empty(hidden.shape[0], self.vocab_size, dtype=torch.float32, device=hidden.device)
        return self.stage.broadcast_from_last(logits)
