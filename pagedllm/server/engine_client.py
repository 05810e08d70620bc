"""What the HTTP layer needs from an engine: the contract `AsyncLLM` implements.

The OpenAI server is written against this Protocol only, so it is tested with a fake engine and
runs unchanged over the real engine core in its own process.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pagedllm.errors import EngineDeadError

__all__ = ["EngineClient", "EngineDeadError"]

if TYPE_CHECKING:  # the engine's input module pulls in torch; the HTTP layer never needs it
    from pagedllm.engine.input_processor import PromptType
    from pagedllm.outputs import RequestOutput
    from pagedllm.sampling_params import SamplingParams


@runtime_checkable
class EngineClient(Protocol):
    tokenizer: Any  # a Hugging Face fast tokenizer (apply_chat_template, decode, __call__)
    max_model_len: int
    model_name: str  # the model path or identifier that was loaded

    def generate(self, prompt: PromptType, params: SamplingParams, request_id: str) -> AsyncIterator[RequestOutput]:
        """Async generator of one request's outputs.

        Validates first: raises ValueError (bad prompt or params; a prompt too long for the context
        says 'max_model_len' / 'context') before yielding anything. Then yields RequestOutputs as
        `params.output_kind` says: DELTA carries only the new text / token ids / logprobs of each of
        the n sequences, FINAL_ONLY one output at the end. Raises EngineDeadError if the engine core
        died. Closing the generator early (aclose(), or cancelling the task that iterates it) aborts
        the request and frees its KV blocks.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a request by id (a no-op for an unknown or finished one)."""
        ...

    async def check_health(self) -> None:
        """Return if the engine core is alive; raise EngineDeadError if it is not."""
        ...

    @property
    def is_dead(self) -> bool:
        """True once the engine core is known to have died."""
        ...

    def num_waiting_requests(self, num_new: int = 0) -> int:
        """Sequences (a request's n children each) waiting for a slot in the engine core now, or that
        would wait if `num_new` more arrived now: free slots are taken first. Load shedding compares
        it with --max-waiting-requests; engine/admission.py says how it is counted live."""
        ...
