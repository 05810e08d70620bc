"""Tokenization, chat templates and detokenization of big inputs, off the event loop.

A 10 MB prompt takes seconds to tokenize; on the event loop those are seconds in which /health and
every other request wait. Big inputs go to a small thread pool instead, which keeps the loop free
because the work there lets go of the GIL: a Hugging Face fast tokenizer's Rust batch calls
(`encode_batch`, `decode_batch`; not `encode` nor `decode`) release it, and a chat template's Jinja
code is Python, which yields it every switch interval. Only pure functions of their arguments run
in the pool; the frontend's state (requests, detokenizers, the engine client) stays on the loop's
thread.

What still holds the GIL is turning a Rust encoding into a Python list (about 40 ns a token), so a
prompt longer than the context is only counted, never listed: its request fails on the count alone.
Small inputs are tokenized inline, where a thread hop would cost more than the work.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# Up to this many characters (or token ids) the work takes ~1 ms or less: do it on the loop.
INLINE_MAX = 4096
# Big inputs at once before the next waits for a thread; HF fast tokenizers are safe to share
# between threads as long as nothing changes their settings (we never do: `_encode` reads them).
MAX_WORKERS = 4


@dataclass(frozen=True)
class Encoded:
    num_tokens: int
    token_ids: list[int] | None  # None when num_tokens passed the limit asked for


class TextWorker:
    def __init__(self, tokenizer: Any, max_workers: int = MAX_WORKERS) -> None:
        self.tokenizer = tokenizer
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="pagedllm-text")

    async def run(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """Pure text work on inputs of `size` (characters or token ids): inline when small, else on
        the pool (also any other such work, e.g. building a big response body)."""
        if size <= INLINE_MAX:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def encode(self, text: str, add_special_tokens: bool, max_tokens: int | None = None) -> Encoded:
        """Token ids of `text`; only the count if there are more than `max_tokens`."""
        return await self.run(len(text), _encode, self.tokenizer, text, add_special_tokens, max_tokens)

    async def encode_chat(self, conversation: list[dict[str, Any]], add_generation_prompt: bool,
                          continue_final_message: bool, max_tokens: int | None = None,
                          tools: list[dict[str, Any]] | None = None) -> tuple[str, Encoded]:
        """The chat template's text, and its token ids (the template already holds the special tokens)."""
        size = sum(len(m["content"]) for m in conversation)
        return await self.run(size, _encode_chat, self.tokenizer, conversation, add_generation_prompt,
                               continue_final_message, max_tokens, tools)

    async def decode(self, token_ids: Sequence[int]) -> str:
        return await self.run(len(token_ids), _decode, self.tokenizer, token_ids)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _backend(tokenizer: Any) -> Any:
    """The Rust tokenizer behind a HF fast tokenizer, when calling it directly means the same as
    calling the HF one (no truncation or padding configured); else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return backend


def _encode(tokenizer: Any, text: str, add_special_tokens: bool, max_tokens: int | None) -> Encoded:
    backend = _backend(tokenizer)
    if backend is None:
        ids = list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)
        return Encoded(len(ids), ids if max_tokens is None or len(ids) <= max_tokens else None)
    # The batch calls release the GIL where `encode` holds it; the fast one skips the offsets we never use.
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
    encoding = encode_batch([text], add_special_tokens=add_special_tokens)[0]
    num_tokens = len(encoding)
    if max_tokens is not None and num_tokens > max_tokens:
        return Encoded(num_tokens, None)  # listing millions of ids would hold the GIL for 100s of ms
    return Encoded(num_tokens, encoding.ids)


def _encode_chat(tokenizer: Any, conversation: list[dict[str, Any]], add_generation_prompt: bool,
                 continue_final_message: bool, max_tokens: int | None,
                 tools: list[dict[str, Any]] | None) -> tuple[str, Encoded]:
    text = tokenizer.apply_chat_template(conversation, tools=tools, tokenize=False,
                                         add_generation_prompt=add_generation_prompt,
                                         continue_final_message=continue_final_message)
    return text, _encode(tokenizer, text, False, max_tokens)


def _decode(tokenizer: Any, token_ids: Sequence[int]) -> str:
    backend = _backend(tokenizer)
    if backend is None or len(token_ids) <= INLINE_MAX:
        return str(tokenizer.decode(token_ids))
    # decode_batch releases the GIL where decode holds it; then what HF's decode adds after it.
    text = backend.decode_batch([list(token_ids)], skip_special_tokens=False)[0]
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        text = tokenizer.clean_up_tokenization(text)
    return str(text)
