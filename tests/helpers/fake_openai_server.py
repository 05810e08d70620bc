"""A fake OpenAI-compatible streaming server (aiohttp.web) for the serving benchmark tests.

It streams `max_tokens` tokens with known delays (TTFT_S before the first chunk, ITL_S between
chunks), packing the first two tokens into one chunk (as a detokenizer holding back bytes does),
then a finish chunk, a usage chunk and [DONE]; chat streams open with a role delta. Chosen
requests (1-based arrival order) fail: with HTTP 500, with an error event after a few chunks,
or by ending the stream early without [DONE].
It records payloads and its peak number of requests in flight, and its /metrics counts
prefix-cache hits as a prompt sent a second time.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TTFT_S = 0.05
ITL_S = 0.01
MODEL = "fake-model"
CHAT_PROMPT_TOKENS = 99  # what the fake server reports as a chat request's prompt_tokens


@dataclass
class FakeServerState:
    base_url: str = ""
    send_usage: bool = True
    fail_http: set[int] = field(default_factory=set)  # arrival numbers answered with HTTP 500
    fail_stream: set[int] = field(default_factory=set)  # arrival numbers that die mid-stream
    fail_truncate: set[int] = field(default_factory=set)  # arrival numbers whose stream just stops
    payloads: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    seen_prompts: set[tuple[int, ...]] = field(default_factory=set)
    prefix_cache_queries: int = 0  # prompt tokens looked up, like the engine's counter
    prefix_cache_hits: int = 0  # all of a prompt's tokens when the same prompt came before


def _count_prefix_cache(state: FakeServerState, prompt: Any) -> None:
    if not isinstance(prompt, list):
        return
    state.prefix_cache_queries += len(prompt)
    if tuple(prompt) in state.seen_prompts:
        state.prefix_cache_hits += len(prompt)
    state.seen_prompts.add(tuple(prompt))


def _prometheus_text(state: FakeServerState) -> str:
    label = f'{{model_name="{MODEL}"}}'
    return (f"# TYPE pagedllm:prefix_cache_queries counter\n"
            f"pagedllm:prefix_cache_queries_total{label} {float(state.prefix_cache_queries)}\n"
            f"pagedllm:prefix_cache_queries_created{label} 1.7e9\n"
            f"pagedllm:prefix_cache_hits_total{label} {float(state.prefix_cache_hits)}\n"
            f"pagedllm:num_preemptions_total{label} 0.0\n")


def _event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _text_chunk(text: str, finish_reason: str | None = None, chat: bool = False) -> dict[str, Any]:
    if chat:
        return {"object": "chat.completion.chunk", "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish_reason}]}
    return {"object": "text_completion", "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason}]}


async def _stream(request: web.Request, state: FakeServerState, body: dict[str, Any], number: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    num_tokens, chat = body["max_tokens"], "messages" in body
    if chat:  # the role delta comes at once and carries no token
        await resp.write(_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    # Chunk texts: the first carries two tokens when there are at least two.
    chunks = ["ab "] + ["c "] * (num_tokens - 2) if num_tokens >= 2 else ["a "]
    for i, text in enumerate(chunks):
        await asyncio.sleep(TTFT_S if i == 0 else ITL_S)
        if number in state.fail_stream and i == 2:
            await resp.write(_event({"error": {"message": "engine died", "type": "InternalError"}}))
            return resp
        if number in state.fail_truncate and i == 2:
            return resp  # no finish chunk, no usage, no [DONE]
        await resp.write(_event(_text_chunk(text, chat=chat)))
    await resp.write(_event(_text_chunk("", "length", chat)))
    if state.send_usage:
        prompt_len = CHAT_PROMPT_TOKENS if chat else len(body["prompt"])
        usage = {"prompt_tokens": prompt_len, "completion_tokens": num_tokens,
                 "total_tokens": prompt_len + num_tokens}
        await resp.write(_event({"choices": [], "usage": usage}))
    await resp.write(b"data: [DONE]\n\n")
    return resp


def make_app(state: FakeServerState) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.payloads.append(body)
        number = len(state.payloads)
        _count_prefix_cache(state, body.get("prompt"))
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            if number in state.fail_http:
                return web.json_response({"error": {"message": "boom", "type": "InternalError"}}, status=500)
            return await _stream(request, state, body, number)
        finally:
            state.in_flight -= 1

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=_prometheus_text(state), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    return app
