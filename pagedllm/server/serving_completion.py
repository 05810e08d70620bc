"""POST /v1/completions: prompts as text, token ids or lists of either; streamed or not.

Choice `index` is prompt_index * n + sequence index, as OpenAI numbers them. Usage counts each
prompt's tokens once and sums completion tokens over every prompt and every sequence.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request, Response

from pagedllm.outputs import CompletionOutput, RequestOutput
from pagedllm.server.errors import bad_request, from_engine_exception
from pagedllm.server.logprobs import append_completion_logprobs
from pagedllm.server.protocol import CompletionRequest
from pagedllm.server.protocol_responses import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    CompletionStreamResponse,
    UsageInfo,
)
from pagedllm.server.serving_common import (
    Outputs,
    ServingBase,
    TokenizedPrompt,
    check_prompt_not_empty,
    random_id,
    respond,
)
from pagedllm.server.utils import SSE_DONE, aclose_quietly, json_response, sse_error, sse_event


@dataclass
class _ChoiceState:
    """What a streamed choice has sent so far."""

    num_tokens: int = 0
    # logprobs' text_offset of the next token: the summed lengths of the token strings before it (as
    # vLLM; a character split over byte tokens makes these differ from the text, so both the streamed
    # and the full response count the same way)
    offset: int = 0
    echoed: bool = False
    finished: bool = False


@dataclass
class _Job:
    request: CompletionRequest
    prompts: list[TokenizedPrompt]
    request_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def n(self) -> int:
        return self.request.n


def _prompt_items(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """The request's prompts: one text, one list of token ids, or a batch of either."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("The prompt list is empty.", "prompt")
    if isinstance(prompt[0], int):
        return [prompt]  # one prompt of token ids
    return list(prompt)


class OpenAIServingCompletion(ServingBase):
    async def create(self, request: CompletionRequest, raw_request: Request) -> Response:
        request.check_supported()
        self.check_runtime_bounds(request)
        model = self.resolve_model(request.model)
        items = _prompt_items(request.prompt)
        num_sequences = len(items) * request.n
        self.check_admission(num_sequences)
        prompts = await self._tokenize_prompts(items)
        params = [request.to_sampling_params(len(p.token_ids), self.engine.max_model_len,
                                             self.settings.sampling_defaults) for p in prompts]
        self.check_admission(num_sequences)  # again: what was admitted while this one was tokenized counts now
        job = _Job(request, prompts, random_id("cmpl"), model)
        outputs = self.start(prompts, params, job.request_id)
        return await respond(raw_request, outputs, len(prompts), bool(request.stream),
                             lambda finals: self._full_response(job, finals),
                             lambda items: self._stream(job, items))

    async def _tokenize_prompts(self, items: list[str | list[int]]) -> list[TokenizedPrompt]:
        for item in items:
            if not isinstance(item, str):
                self.check_token_ids(item, "prompt")
        result = await asyncio.gather(*(self._tokenize_prompt(item) for item in items))
        for tokenized in result:
            check_prompt_not_empty(tokenized, "prompt")
        return result

    async def _tokenize_prompt(self, item: str | list[int]) -> TokenizedPrompt:
        if isinstance(item, str):
            return await self.tokenize_prompt(item, "prompt")
        return TokenizedPrompt(None, list(item))

    def _prompt_text(self, prompt: TokenizedPrompt) -> str:
        return prompt.text if prompt.text is not None else self.tokenizer.decode(prompt.token_ids)

    # ------------------------------------------------------------------------------ not streamed

    def _full_response(self, job: _Job, finals: list[RequestOutput]) -> Response:
        choices = []
        num_generated = 0
        for prompt_index, final in enumerate(finals):
            for out in final.outputs:
                choices.append(self._full_choice(job, prompt_index, final, out))
                num_generated += len(out.token_ids)
        num_prompt = sum(len(p.token_ids) for p in job.prompts)
        body = CompletionResponse(id=job.request_id, created=job.created, model=job.model,
                                  choices=sorted(choices, key=lambda c: c.index),
                                  usage=UsageInfo.of(num_prompt, num_generated))
        return json_response(body)

    def _full_choice(self, job: _Job, prompt_index: int, final: RequestOutput,
                     out: CompletionOutput) -> CompletionChoice:
        state = _ChoiceState()
        text, logprobs = self._echo(job, prompt_index, final, state)
        text += out.text
        if logprobs is not None and out.logprobs is not None:
            append_completion_logprobs(logprobs, out.token_ids, out.logprobs, job.request.logprobs or 0,
                                       self.tokenizer, state.offset)
        return CompletionChoice(index=prompt_index * job.n + out.index, text=text, logprobs=logprobs,
                                finish_reason=out.finish_reason, stop_reason=out.stop_reason)

    def _echo(self, job: _Job, prompt_index: int, output: RequestOutput,
              state: _ChoiceState) -> tuple[str, CompletionLogprobs | None]:
        """The prompt's text (and logprobs) when `echo` asks for it, or "" (and empty logprobs)."""
        want_logprobs = job.request.logprobs is not None
        logprobs = CompletionLogprobs() if want_logprobs else None
        state.echoed = True
        if not job.request.echo:
            return "", logprobs
        prompt = job.prompts[prompt_index]
        text = self._prompt_text(prompt)
        state.offset = len(text)
        if logprobs is not None and output.prompt_logprobs is not None:
            state.offset = append_completion_logprobs(logprobs, prompt.token_ids, output.prompt_logprobs,
                                                      job.request.logprobs or 0, self.tokenizer, 0)
        return text, logprobs

    # ---------------------------------------------------------------------------------- streamed

    async def _stream(self, job: _Job, items: Outputs) -> AsyncIterator[str]:
        states: dict[int, _ChoiceState] = {}
        try:
            async for prompt_index, output in items:
                for out in output.outputs:
                    index = prompt_index * job.n + out.index
                    state = states.setdefault(index, _ChoiceState())
                    chunk = self._stream_choice(job, prompt_index, output, out, state)
                    if chunk is not None:
                        yield sse_event(CompletionStreamResponse(
                            id=job.request_id, created=job.created, model=job.model, choices=[chunk]),
                            exclude=None if job.request.include_usage else {"usage"})
            if job.request.include_usage:
                num_prompt = sum(len(p.token_ids) for p in job.prompts)
                num_generated = sum(s.num_tokens for s in states.values())
                yield sse_event(CompletionStreamResponse(
                    id=job.request_id, created=job.created, model=job.model, choices=[],
                    usage=UsageInfo.of(num_prompt, num_generated)))
        except Exception as e:  # e.g. the engine died mid-stream: end with an error, never hang
            yield sse_error(from_engine_exception(e))
        finally:
            await aclose_quietly(items)
        yield SSE_DONE

    def _stream_choice(self, job: _Job, prompt_index: int, output: RequestOutput, out: CompletionOutput,
                       state: _ChoiceState) -> CompletionChoice | None:
        """The chunk for one sequence's delta; None when there is nothing new to send (a DELTA
        output repeats sequences that have nothing new, or that finished earlier)."""
        if state.finished:
            return None
        text, logprobs = ("", None) if state.echoed else self._echo(job, prompt_index, output, state)
        if logprobs is None and job.request.logprobs is not None:
            logprobs = CompletionLogprobs()
        state.num_tokens += len(out.token_ids)
        if logprobs is not None and out.logprobs is not None:
            state.offset = append_completion_logprobs(logprobs, out.token_ids, out.logprobs,
                                                      job.request.logprobs or 0, self.tokenizer, state.offset)
        text += out.text
        state.finished = out.finish_reason is not None
        if not text and not out.token_ids and not state.finished:
            return None
        return CompletionChoice(index=prompt_index * job.n + out.index, text=text, logprobs=logprobs,
                                finish_reason=out.finish_reason, stop_reason=out.stop_reason)
