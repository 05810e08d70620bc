"""The official openai client, unchanged, against a live uvicorn server over the fake engine."""
from __future__ import annotations

import openai
import pytest

from tests.helpers.fake_engine import FakeEngine, reply_for

MODEL = "fake-model"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def _num_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_models_list(openai_client):
    models = openai_client.models.list()
    assert [m.id for m in models.data] == ["fake-model", "alias"]
    assert all(m.object == "model" and m.owned_by == "pagedllm" for m in models.data)
    assert openai_client.models.retrieve("alias").id == "alias"
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("org/other")


def test_completion_text_usage_and_finish_reason(openai_client, live_engine: FakeEngine):
    out = openai_client.completions.create(model=MODEL, prompt="The capital", max_tokens=100)
    reply = reply_for(0)
    assert out.object == "text_completion" and out.model == MODEL and out.id.startswith("cmpl-")
    assert out.choices[0].text == reply and out.choices[0].finish_reason == "stop"
    num_prompt = _num_tokens(live_engine.tokenizer, "The capital")
    num_completion = _num_tokens(live_engine.tokenizer, reply) + 1  # + EOS
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (num_prompt, num_completion)
    assert out.usage.total_tokens == num_prompt + num_completion


def test_completion_max_tokens_length_and_default(openai_client, live_engine: FakeEngine):
    out = openai_client.completions.create(model=MODEL, prompt="Hi", max_tokens=5)
    assert out.choices[0].text == reply_for(0)[:5] and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5
    # OpenAI's (and vLLM's) completions default is 16 tokens; chat's default is the rest of the context.
    out = openai_client.completions.create(model=MODEL, prompt="Hi")
    assert out.usage.completion_tokens == 16 and live_engine.requests[-1][2].max_tokens == 16
    openai_client.chat.completions.create(model=MODEL, messages=CHAT)
    prompt_len = len(live_engine.requests[-1][1]["prompt_token_ids"])
    assert live_engine.requests[-1][2].max_tokens == live_engine.max_model_len - prompt_len


@pytest.mark.parametrize("prompt", ["One", ["One", "Two!"], [79, 110, 101], [[79, 110, 101], [84, 119, 111, 33]]])
def test_completion_prompt_forms_n2_indexes_and_usage(openai_client, live_engine: FakeEngine, prompt):
    out = openai_client.completions.create(model=MODEL, prompt=prompt, n=2, max_tokens=100)
    prompts = prompt if isinstance(prompt, list) and not isinstance(prompt[0], int) else [prompt]
    assert [c.index for c in out.choices] == list(range(2 * len(prompts)))
    assert [c.text for c in out.choices] == [reply_for(i % 2) for i in range(2 * len(prompts))]
    lengths = [len(p) if isinstance(p, list) else _num_tokens(live_engine.tokenizer, p) for p in prompts]
    assert out.usage.prompt_tokens == sum(lengths)  # each prompt once, not once per sequence
    per_prompt = sum(_num_tokens(live_engine.tokenizer, reply_for(i)) + 1 for i in range(2))
    assert out.usage.completion_tokens == per_prompt * len(prompts)


def test_completion_echo_and_logprobs(openai_client):
    out = openai_client.completions.create(model=MODEL, prompt="Hey", max_tokens=4, echo=True, logprobs=2)
    choice = out.choices[0]
    assert choice.text == "Hey" + reply_for(0)[:4]
    lp = choice.logprobs
    assert lp.tokens == ["H", "e", "y", "P", "a", "r", "i"]
    assert lp.token_logprobs[0] is None and all(isinstance(x, float) for x in lp.token_logprobs[1:])
    assert lp.top_logprobs[0] is None and all(len(t) == 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset == list(range(7))
    assert lp.top_logprobs[3]["P"] == lp.token_logprobs[3]


def test_completion_stop_string(openai_client):
    out = openai_client.completions.create(model=MODEL, prompt="Hi", max_tokens=100, stop=["capital"])
    assert out.choices[0].text == "Paris — the " and out.choices[0].finish_reason == "stop"
    out = openai_client.completions.create(model=MODEL, prompt="Hi", max_tokens=100, stop="capital",
                                           extra_body={"include_stop_str_in_output": True})
    assert out.choices[0].text == "Paris — the capital"


def test_vllm_extras_reach_the_engine(openai_client, live_engine: FakeEngine):
    openai_client.completions.create(
        model="alias", prompt="Hi", max_tokens=8, temperature=0.5, top_p=0.9, seed=7, presence_penalty=0.5,
        frequency_penalty=-0.5, logit_bias={"42": 5}, user="me",
        extra_body={"top_k": 3, "min_p": 0.1, "repetition_penalty": 1.2, "min_tokens": 2, "ignore_eos": True,
                    "stop_token_ids": [9], "skip_special_tokens": False})
    p = live_engine.requests[-1][2]
    assert (p.temperature, p.top_p, p.seed, p.presence_penalty, p.frequency_penalty) == (0.5, 0.9, 7, 0.5, -0.5)
    assert (p.top_k, p.min_p, p.repetition_penalty, p.min_tokens, p.ignore_eos) == (3, 0.1, 1.2, 2, True)
    assert p.logit_bias == {42: 5.0} and p.stop_token_ids == [9] and p.skip_special_tokens is False


def test_completion_stream_matches_non_stream(openai_client):
    full = openai_client.completions.create(model=MODEL, prompt=["A", "B"], n=2, max_tokens=30, seed=3)
    chunks = list(openai_client.completions.create(model=MODEL, prompt=["A", "B"], n=2, max_tokens=30, seed=3,
                                                   stream=True, stream_options={"include_usage": True}))
    texts: dict[int, str] = {}
    finish: dict[int, list[str]] = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None and len(chunk.choices) == 1
        c = chunk.choices[0]
        texts[c.index] = texts.get(c.index, "") + c.text
        if c.finish_reason is not None:
            finish.setdefault(c.index, []).append(c.finish_reason)
    assert texts == {c.index: c.text for c in full.choices}
    assert finish == {c.index: [c.finish_reason] for c in full.choices}  # exactly one finish per choice
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def test_chat_completion(openai_client, live_engine: FakeEngine):
    out = openai_client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=100)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content == reply_for(0)
    assert out.choices[0].finish_reason == "stop"
    prompt = live_engine.requests[-1][1]
    expected = live_engine.tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert prompt["prompt"] == expected and prompt["prompt"].endswith("<|im_start|>assistant\n")
    assert prompt["prompt_token_ids"] == live_engine.tokenizer(expected, add_special_tokens=False).input_ids
    assert out.usage.prompt_tokens == len(prompt["prompt_token_ids"])


def test_chat_multi_turn_and_content_parts(openai_client, live_engine: FakeEngine):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": "Hi!"}, {"role": "developer", "content": "Terse."},
                {"role": "user", "content": "And Spain?"}]
    openai_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    text = live_engine.requests[-1][1]["prompt"]
    assert "<|im_start|>user\nHello\nthere<|im_end|>" in text and "<|im_start|>assistant\nHi!<|im_end|>" in text
    assert "<|im_start|>system\nTerse.<|im_end|>" in text and text.index("Hi!") < text.index("And Spain?")


def test_chat_logprobs(openai_client):
    out = openai_client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3, logprobs=True,
                                                top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert [t.token for t in content] == ["P", "a", "r"]
    assert all(t.bytes == list(t.token.encode()) and len(t.top_logprobs) == 2 for t in content)
    assert all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content)
    plain = openai_client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
    assert plain.choices[0].logprobs is None


def test_chat_stream_shape_n2_and_usage(openai_client):
    full = openai_client.chat.completions.create(model=MODEL, messages=CHAT, n=2, max_tokens=100)
    stream = openai_client.chat.completions.create(model=MODEL, messages=CHAT, n=2, max_tokens=100, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    firsts = {}
    texts = {0: "", 1: ""}
    finishes = []
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        firsts.setdefault(choice.index, choice.delta)
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes.append((choice.index, choice.finish_reason))
    assert all(d.role == "assistant" and d.content == "" for d in firsts.values()) and len(firsts) == 2
    assert texts == {c.index: c.message.content for c in full.choices}
    assert sorted(finishes) == [(0, "stop"), (1, "stop")]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def test_chat_stream_without_usage_has_no_usage_chunk(openai_client):
    chunks = list(openai_client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, stream=True))
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply_for(0)[:4]


def test_errors_through_the_client(openai_client):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.completions.create(model="nope", prompt="Hi")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.completions.create(model=MODEL, prompt="x" * 300)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=MODEL, messages=CHAT, temperature=-1)


def test_concurrent_streams_complete_independently(live, live_engine: FakeEngine):
    import asyncio

    server, _ = live
    live_engine.token_delay = 0.002  # interleave the streams' steps on the server's event loop

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Question {i}"}], max_tokens=10 + i, stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        return text, usage.completion_tokens

    async def run() -> list[tuple[str, int]]:
        async with openai.AsyncOpenAI(api_key="unused", base_url=f"{server.base_url}/v1", max_retries=0,
                                      timeout=20) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(run())
    assert [r[1] for r in results] == [10 + i for i in range(32)]
    assert all(text == reply_for(0).encode()[:n].decode() for text, n in results)  # one token per byte
    assert sorted(live_engine.finished) == sorted(live_engine.started) and len(live_engine.started) == 32


def test_completion_stream_echo_and_logprobs_match_non_stream(openai_client):
    kwargs = dict(model=MODEL, prompt=["Hé", "Yo"], n=2, max_tokens=12, echo=True, logprobs=1)
    full = openai_client.completions.create(**kwargs)
    merged: dict[int, dict[str, list]] = {}
    for chunk in openai_client.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            m = merged.setdefault(c.index, {"text": [], "tokens": [], "offsets": [], "lps": [], "tops": []})
            m["text"].append(c.text)
            m["tokens"] += c.logprobs.tokens
            m["offsets"] += c.logprobs.text_offset
            m["lps"] += c.logprobs.token_logprobs
            m["tops"] += c.logprobs.top_logprobs
    assert sorted(merged) == [0, 1, 2, 3]
    for choice in full.choices:
        m = merged[choice.index]
        assert "".join(m["text"]) == choice.text and choice.text.startswith(["Hé", "Yo"][choice.index // 2])
        assert m["tokens"] == choice.logprobs.tokens and m["lps"] == choice.logprobs.token_logprobs
        assert m["tops"] == choice.logprobs.top_logprobs and m["offsets"] == choice.logprobs.text_offset
