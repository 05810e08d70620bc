"""Request -> SamplingParams mapping, logprob shapes, tokenize endpoints and the async plumbing."""
from __future__ import annotations

import asyncio

import pytest

from pagedllm import __version__
from pagedllm.outputs import Logprob
from pagedllm.sampling_params import RequestOutputKind
from pagedllm.server.errors import OpenAIError
from pagedllm.server.logprobs import append_completion_logprobs, chat_logprobs
from pagedllm.server.protocol import ChatCompletionRequest, CompletionRequest
from pagedllm.server.protocol_responses import CompletionLogprobs
from pagedllm.server.utils import ClientDisconnected, merge_async_iterators, run_until_disconnected

CHAT = [{"role": "user", "content": "Hi"}]


def test_completion_defaults_and_mapping():
    p = CompletionRequest(prompt="Hi").to_sampling_params(num_prompt_tokens=2, max_model_len=100)
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty) == (1, 1.0, 1.0, 0, 0.0, 1.0)
    assert p.max_tokens == 16 and p.logprobs is None and p.prompt_logprobs is None and p.seed is None
    assert p.output_kind == RequestOutputKind.FINAL_ONLY and p.stop == [] and p.skip_special_tokens
    p = CompletionRequest(prompt="Hi", stream=True, stop="x", max_tokens=None, echo=True, logprobs=3,
                          top_k=-1).to_sampling_params(2, 100)
    assert p.output_kind == RequestOutputKind.DELTA and p.stop == ["x"] and p.max_tokens == 16  # null: the default
    assert (p.logprobs, p.prompt_logprobs, p.top_k) == (3, 3, 0)


def test_chat_max_tokens_and_logprobs_mapping():
    req = ChatCompletionRequest(messages=CHAT, max_tokens=5, max_completion_tokens=7)
    assert req.to_sampling_params(10, 100).max_tokens == 7  # the newer field wins
    assert ChatCompletionRequest(messages=CHAT).to_sampling_params(10, 100).max_tokens == 90
    assert ChatCompletionRequest(messages=CHAT, logprobs=True).to_sampling_params(10, 100).logprobs == 0
    assert ChatCompletionRequest(messages=CHAT, logprobs=True, top_logprobs=4).to_sampling_params(1, 9).logprobs == 4
    assert ChatCompletionRequest(messages=CHAT, logprobs=False).to_sampling_params(1, 9).logprobs is None


def test_no_room_left_is_context_length_exceeded():
    with pytest.raises(OpenAIError) as e:
        ChatCompletionRequest(messages=CHAT).to_sampling_params(100, 100)
    assert (e.value.status, e.value.code, e.value.param) == (400, "context_length_exceeded", "messages")


def test_message_content_parts_and_developer_role():
    req = ChatCompletionRequest(messages=[{"role": "developer", "content": "Be"}, {"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": None}])
    assert [m.to_template_dict() for m in req.messages] == [
        {"role": "system", "content": "Be"}, {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": ""}]


class _Tok:
    def decode(self, ids):
        return "".join(chr(65 + i) for i in ids)


def test_completion_logprobs_keep_chosen_token_and_clamp_minus_inf():
    positions = [None, {1: Logprob(-0.5, 1, "B"), 2: Logprob(-1.0, 2, "C")},
                 {3: Logprob(float("-inf"), 7, "D"), 1: Logprob(-0.1, 1, "B")}]
    result = CompletionLogprobs()
    end = append_completion_logprobs(result, [0, 1, 3], positions, num_top=1, tokenizer=_Tok(), text_offset=10)
    assert result.tokens == ["A", "B", "D"] and result.text_offset == [10, 11, 12] and end == 13
    assert result.token_logprobs == [None, -0.5, -9999.0]
    assert result.top_logprobs == [None, {"B": -0.5}, {"B": -0.1, "D": -9999.0}]  # top-1 plus the chosen one


def test_chat_logprobs_top_k_sorted():
    positions = [{5: Logprob(-2.0, 3, "é"), 1: Logprob(-0.1, 1, "B"), 2: Logprob(-0.7, 2, "C")}]
    (entry,) = chat_logprobs([5], positions, num_top=2, tokenizer=_Tok()).content
    assert (entry.token, entry.logprob, entry.bytes) == ("é", -2.0, [195, 169])
    assert [(t.token, t.logprob) for t in entry.top_logprobs] == [("B", -0.1), ("C", -0.7)]


def test_tokenize_detokenize_round_trip(client):
    out = client.post("/tokenize", json={"prompt": "Héllo", "return_token_strs": True}).json()
    assert out["count"] == 6 and out["max_model_len"] == 256 and len(out["token_strs"]) == 6
    assert client.post("/detokenize", json={"tokens": out["tokens"]}).json() == {"prompt": "Héllo"}
    chat = client.post("/tokenize", json={"messages": CHAT}).json()
    assert client.post("/detokenize", json={"tokens": chat["tokens"]}).json()["prompt"] == \
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    no_gen = client.post("/tokenize", json={"messages": CHAT, "add_generation_prompt": False}).json()
    assert no_gen["count"] < chat["count"]
    for body in ({}, {"prompt": "a", "messages": CHAT}):
        assert client.post("/tokenize", json=body).status_code == 400
    assert client.post("/detokenize", json={"tokens": [100000]}).json()["error"]["param"] == "tokens"


def test_version_and_models(client):
    assert client.get("/version").json() == {"version": __version__}
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["fake/model-path"]
    assert data["data"][0]["max_model_len"] == 256


class _Source:
    """An async iterator whose closing is observable."""

    def __init__(self, items, fail: Exception | None = None, delay: float = 0.0) -> None:
        self.items, self.fail, self.delay, self.closed = list(items), fail, delay, False

    async def _gen(self):
        try:
            for item in self.items:
                await asyncio.sleep(self.delay)
                yield item
            if self.fail:
                raise self.fail
            await asyncio.sleep(3600)  # an endless request: only closing ends it
        finally:
            self.closed = True

    def __aiter__(self):
        self.gen = self._gen()
        return self.gen


def test_merge_interleaves_and_closing_closes_every_source():
    async def run():
        sources = [_Source("ab", delay=0.001), _Source("xyz", delay=0.001)]
        merged = merge_async_iterators(*(s.__aiter__() for s in sources))
        seen = [await merged.__anext__() for _ in range(5)]
        await merged.aclose()
        assert all(s.closed for s in sources)
        return seen

    assert sorted(asyncio.run(run())) == [(0, "a"), (0, "b"), (1, "x"), (1, "y"), (1, "z")]


@pytest.mark.parametrize("num_sources", [1, 2])
def test_merge_raises_source_error_and_closes_the_rest(num_sources):
    async def run():
        sources = [_Source("a", fail=ValueError("bad"))] + [_Source("") for _ in range(num_sources - 1)]
        merged = merge_async_iterators(*(s.__aiter__() for s in sources))
        with pytest.raises(ValueError, match="bad"):
            async for _ in merged:
                pass
        assert all(s.closed for s in sources)

    asyncio.run(run())


class _Request:
    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self):
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_run_until_disconnected_cancels_the_work():
    async def run():
        request, source = _Request(), _Source("")
        merged = merge_async_iterators(source.__aiter__())
        asyncio.get_running_loop().call_later(0.05, request.gone.set)
        with pytest.raises(ClientDisconnected):
            await run_until_disconnected(request, merged.__anext__())
        assert source.closed

    asyncio.run(run())


def test_run_until_disconnected_returns_the_result():
    async def work():
        await asyncio.sleep(0.01)
        return 42

    async def run():
        return await run_until_disconnected(_Request(), work())

    assert asyncio.run(run()) == 42


def test_closing_a_single_source_merge_closes_a_source_suspended_at_yield():
    async def run():
        source = _Source("ab")
        merged = merge_async_iterators(source.__aiter__())
        assert await merged.__anext__() == (0, "a")
        await merged.aclose()  # the source waits at its yield: only aclose() reaches its cleanup
        assert source.closed  # checked here: asyncio.run() would close any leftover generator itself

    asyncio.run(run())


def test_sse_response_aborts_even_if_its_body_never_started():
    from pagedllm.server.serving_common import _SSEResponse

    async def body():
        yield "data: never\n\n"

    async def send(message):
        raise OSError("client gone")  # the very first send fails: the body generator never starts

    async def run():
        source = _Source("ab")
        outputs = merge_async_iterators(source.__aiter__())
        assert await outputs.__anext__() == (0, "a")  # primed, as respond() does
        response = _SSEResponse(body(), outputs)
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        with pytest.raises(Exception):
            await response(scope, _Request().receive, send)
        assert source.closed

    asyncio.run(run())
