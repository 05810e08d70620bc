"""A scripted `EngineClient` for the HTTP layer's tests: real tokenizer and detokenizer, no model.

Each sequence k of a request "generates" the bytes of `reply_for(k)` (a byte-level tokenizer, so
one token per byte, multi-byte characters included), then EOS, within max_tokens and the stop
strings. Outputs follow the engine's contract: validation errors before the first yield, DELTA
outputs that repeat every sequence (finished ones with an empty delta), FINAL_ONLY once, and
closing the generator early counts as an abort, which the tests check.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pagedllm.engine.detokenizer import IncrementalDetokenizer
from pagedllm.errors import EngineDeadError
from pagedllm.outputs import CompletionOutput, Logprob, RequestOutput
from pagedllm.sampling_params import RequestOutputKind, SamplingParams

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EOS = "<|im_end|>"


def _byte_level_chars() -> list[str]:
    """GPT-2's byte -> printable character map (what ByteLevel pre-tokenization produces)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b], extra = chr(256 + extra), extra + 1
    return [chars[b] for b in range(256)]


def make_tokenizer() -> Any:
    """A byte-level BPE without merges (token id = byte value) plus ChatML specials, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in enumerate(_byte_level_chars())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", EOS])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, chat_template=CHATML_TEMPLATE)


FILLER_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
                "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua")


def make_word_tokenizer() -> Any:
    """A word-level tokenizer (one token per word of FILLER_WORDS, about 6 bytes a token as real
    vocabularies on English) plus the ChatML specials: realistic token counts for huge prompts."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(FILLER_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", EOS])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, unk_token="[UNK]",
                                   chat_template=CHATML_TEMPLATE)


def reply_for(index: int) -> str:
    # Different lengths per sequence, so n > 1 sequences finish at different steps; "—" is 3 bytes.
    return f"Paris — the capital of France{'!' * index}. It is lovely."


@dataclass
class FakeEngine:
    max_model_len: int = 256
    model_name: str = "fake/model-path"
    token_delay: float = 0.0  # seconds per step
    tokenizer: Any = field(default_factory=make_tokenizer)
    paused: bool = False  # steps wait while True (to hold requests in flight)
    dead: bool = False
    num_waiting: int = 0  # sequences waiting for a slot
    free_slots: int = 256  # slots new sequences take before they wait
    requests: list[tuple[str, Any, SamplingParams]] = field(default_factory=list)
    reply: Any = None  # (sequence index) -> the text it generates; None: reply_for
    started: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    @property
    def is_dead(self) -> bool:
        return self.dead

    def num_waiting_requests(self, num_new: int = 0) -> int:
        return self.num_waiting + max(0, num_new - self.free_slots)

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError("engine core died")

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(EOS)

    def _validate(self, prompt: Any, params: SamplingParams) -> list[int]:
        if self.dead:
            raise EngineDeadError("engine core died")
        ids = list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) else None
        if ids is None:
            raise ValueError("the fake engine takes prompt_token_ids")
        if not ids or not all(isinstance(t, int) and 0 <= t < len(self.tokenizer) for t in ids):
            raise ValueError("Prompt token ids must be in the model's vocabulary.")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"The prompt is {len(ids)} tokens, over the context (max_model_len).")
        if params.max_tokens is not None and len(ids) + params.max_tokens > self.max_model_len:
            raise ValueError("max_tokens plus the prompt exceeds max_model_len")
        return ids

    async def generate(self, prompt: Any, params: SamplingParams, request_id: str) -> AsyncIterator[RequestOutput]:
        ids = self._validate(prompt, params)
        self.requests.append((request_id, prompt, params))
        self.started.append(request_id)
        done = False
        try:
            async for output in _Run(self, ids, params, request_id).outputs():
                yield output
            done = True
        finally:
            (self.finished if done else self.aborted).append(request_id)


class _Run:
    """One request's scripted generation."""

    def __init__(self, engine: FakeEngine, prompt_ids: list[int], params: SamplingParams, request_id: str) -> None:
        self.engine, self.prompt_ids, self.params, self.request_id = engine, prompt_ids, params, request_id
        tok = engine.tokenizer
        reply = engine.reply or reply_for
        self.scripts = [list(tok(reply(k), add_special_tokens=False).input_ids) + [engine.eos_token_id]
                        for k in range(params.n)]
        self.detoks = [IncrementalDetokenizer(tok, prompt_ids, params.skip_special_tokens, True, list(params.stop or []),
                                              params.include_stop_str_in_output) for _ in range(params.n)]
        self.seqs = [CompletionOutput(k, "", [], 0.0 if params.logprobs is not None else None,
                                      [] if params.logprobs is not None else None) for k in range(params.n)]
        self.sent = [0] * params.n

    def _logprobs(self, token_id: int, position: int, k: int) -> dict[int, Logprob]:
        decode = self.engine.tokenizer.decode
        alternatives = [token_id] + [(token_id + j) % 256 for j in range(1, k + 1)]
        entry: dict[int, Logprob] = {}
        for rank, t in enumerate(alternatives[:max(k, 1)], start=1):
            entry.setdefault(t, Logprob(-0.25 * rank - 0.01 * (position % 5), rank, decode([t])))
        return entry

    def _prompt_logprobs(self) -> list[dict[int, Logprob] | None] | None:
        if self.params.prompt_logprobs is None:
            return None
        return [None] + [self._logprobs(t, i, self.params.prompt_logprobs) for i, t in enumerate(self.prompt_ids[1:])]

    def _step(self, seq: CompletionOutput) -> None:
        """Sample one token of sequence `seq` and apply the stop checks (EOS, length, stop strings)."""
        k = seq.index
        token_id = self.scripts[k][len(seq.token_ids)]
        seq.token_ids.append(token_id)
        if seq.logprobs is not None:
            seq.logprobs.append(self._logprobs(token_id, len(seq.token_ids), self.params.logprobs or 0))
        is_eos = token_id == self.engine.eos_token_id and not self.params.ignore_eos
        stop_str = self.detoks[k].update([token_id], stop_terminated=is_eos)
        if stop_str is not None:
            seq.finish_reason, seq.stop_reason = "stop", stop_str
        elif is_eos:
            seq.finish_reason = "stop"
        elif len(seq.token_ids) >= (self.params.max_tokens or self.engine.max_model_len) or \
                len(seq.token_ids) == len(self.scripts[k]):
            seq.finish_reason = "length"

    def _delta(self, seq: CompletionOutput) -> CompletionOutput:
        k, start = seq.index, self.sent[seq.index]
        self.sent[k] = len(seq.token_ids)
        text = self.detoks[k].get_next_output_text(seq.finish_reason is not None, delta=True)
        logprobs = seq.logprobs[start:] if seq.logprobs is not None else None
        return CompletionOutput(k, text, seq.token_ids[start:], None, logprobs, seq.finish_reason, seq.stop_reason)

    def _output(self, completions: list[CompletionOutput], prompt_logprobs: Any) -> RequestOutput:
        return RequestOutput(self.request_id, None, self.prompt_ids, prompt_logprobs, completions,
                             finished=all(s.finish_reason is not None for s in self.seqs))

    async def outputs(self) -> AsyncIterator[RequestOutput]:
        prompt_logprobs = self._prompt_logprobs()
        delta = self.params.output_kind == RequestOutputKind.DELTA
        while not all(s.finish_reason is not None for s in self.seqs):
            await asyncio.sleep(self.engine.token_delay)
            while self.engine.paused and not self.engine.dead:
                await asyncio.sleep(0.005)
            if self.engine.dead:
                raise EngineDeadError("engine core died")
            for seq in self.seqs:
                if seq.finish_reason is None:
                    self._step(seq)
            if delta:
                yield self._output([self._delta(s) for s in self.seqs], prompt_logprobs)
        if not delta:
            for seq in self.seqs:
                seq.text = self.detoks[seq.index].get_next_output_text(True, delta=False)
            yield self._output(self.seqs, prompt_logprobs)
