"""POST /v1/chat/completions: the model's chat template, then generation; streamed or not.

A stream is what OpenAI sends: per choice a first chunk with delta {"role": "assistant",
"content": ""}, then content deltas, a chunk with finish_reason, and, when
stream_options.include_usage, one last chunk with empty choices and the usage.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request, Response

from pagedllm.outputs import CompletionOutput, RequestOutput
from pagedllm.reasoning.parsers import REASONING_PARSERS
from pagedllm.server.chat_output import ChoiceReader
from pagedllm.server.chat_tools import ToolPlan, plan_tools
from pagedllm.server.errors import from_engine_exception
from pagedllm.server.logprobs import chat_logprobs
from pagedllm.server.protocol import ChatCompletionRequest
from pagedllm.server.protocol_responses import (
    ChatChoice,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatLogprobs,
    ChatStreamChoice,
    DeltaMessage,
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
class _Job:
    request: ChatCompletionRequest
    prompt: TokenizedPrompt
    request_id: str
    model: str
    tools: ToolPlan
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, choices: list[ChatStreamChoice], usage: UsageInfo | None = None) -> str:
        body = ChatCompletionStreamResponse(id=self.request_id, created=self.created, model=self.model,
                                            choices=choices, usage=usage)
        # OpenAI puts "usage": null on every chunk only when usage was asked for.
        return sse_event(body, exclude=None if self.request.include_usage else {"usage"})


class OpenAIServingChat(ServingBase):
    async def create(self, request: ChatCompletionRequest, raw_request: Request) -> Response:
        request.check_supported()
        self.check_runtime_bounds(request)
        model = self.resolve_model(request.model)
        self.check_admission(request.n)
        tools = plan_tools(request, self.settings)
        prompt = await self.render_chat(request.messages, request.add_generation_prompt,
                                        request.continue_final_message, tools=request.template_tools())
        check_prompt_not_empty(prompt, "messages")
        params = request.to_sampling_params(len(prompt.token_ids), self.engine.max_model_len,
                                            self.settings.sampling_defaults, tools.constraint)
        if tools.needs_special_tokens:  # the parser's markers are special tokens
            params.skip_special_tokens = False
        self.check_admission(request.n)  # again: what was admitted while this one was rendered counts now
        job = _Job(request, prompt, random_id("chatcmpl"), model, tools)
        outputs = self.start([prompt], [params], job.request_id)
        return await respond(raw_request, outputs, 1, bool(request.stream),
                             lambda finals: self._full_response(job, finals[0]),
                             lambda items: self._stream(job, items))

    def _logprobs(self, job: _Job, out: CompletionOutput) -> ChatLogprobs | None:
        if not job.request.logprobs or out.logprobs is None:
            return None
        return chat_logprobs(out.token_ids, out.logprobs, job.request.top_logprobs or 0, self.tokenizer)

    def _reader(self, job: _Job) -> ChoiceReader:
        name = self.settings.reasoning_parser
        return ChoiceReader(None if name is None else REASONING_PARSERS.get(name)(), job.tools)

    def _full_response(self, job: _Job, final: RequestOutput) -> Response:
        choices = []
        for out in sorted(final.outputs, key=lambda o: o.index):
            message, finish_reason = self._reader(job).message(out.text, out.finish_reason)
            choices.append(ChatChoice(index=out.index, message=message, logprobs=self._logprobs(job, out),
                                      finish_reason=finish_reason, stop_reason=out.stop_reason))
        num_generated = sum(len(out.token_ids) for out in final.outputs)
        body = ChatCompletionResponse(id=job.request_id, created=job.created, model=job.model, choices=choices,
                                      usage=UsageInfo.of(len(job.prompt.token_ids), num_generated))
        return json_response(body)

    async def _stream(self, job: _Job, items: Outputs) -> AsyncIterator[str]:
        n = job.request.n
        num_tokens = [0] * n
        finished = [False] * n
        readers = [self._reader(job) for _ in range(n)]
        try:
            for index in range(n):
                role = DeltaMessage(role="assistant", content="")
                yield job.chunk([ChatStreamChoice(index=index, delta=role)])
            async for _, output in items:
                for out in output.outputs:
                    if finished[out.index]:
                        continue  # DELTA outputs repeat sequences that already ended
                    num_tokens[out.index] += len(out.token_ids)
                    finished[out.index] = out.finish_reason is not None
                    if out.text or out.token_ids or finished[out.index]:
                        yield job.chunk([self._delta_choice(job, out, readers[out.index])])
            if job.request.include_usage:
                usage = UsageInfo.of(len(job.prompt.token_ids), sum(num_tokens))
                yield job.chunk([], usage)
        except Exception as e:  # e.g. the engine died mid-stream: end with an error, never hang
            yield sse_error(from_engine_exception(e))
        finally:
            await aclose_quietly(items)
        yield SSE_DONE

    def _delta_choice(self, job: _Job, out: CompletionOutput, reader: ChoiceReader) -> ChatStreamChoice:
        delta, finish_reason = reader.delta(out.text, out.finish_reason)
        return ChatStreamChoice(index=out.index, delta=delta, logprobs=self._logprobs(job, out),
                                finish_reason=finish_reason, stop_reason=out.stop_reason)
