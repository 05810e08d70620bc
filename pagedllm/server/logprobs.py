"""Engine logprobs (token id -> Logprob per position) in the two shapes OpenAI returns them."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pagedllm.outputs import Logprob
from pagedllm.server.protocol_responses import ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs

# JSON has no -inf; OpenAI's clients expect a number, so an impossible token gets vLLM's floor.
_MIN_LOGPROB = -9999.0

Position = dict[int, Logprob] | None  # None: the first prompt token, which has no logprob


def _finite(logprob: float) -> float:
    return max(logprob, _MIN_LOGPROB)


def _token_text(tokenizer: Any, token_id: int, entry: Logprob | None) -> str:
    if entry is not None and entry.decoded_token is not None:
        return entry.decoded_token
    return str(tokenizer.decode([token_id]))


def _top(position: dict[int, Logprob], num_top: int) -> list[tuple[int, Logprob]]:
    """The `num_top` most likely tokens. The engine's dict holds the top-k plus the sampled token
    (which may rank lower), so sorting by logprob and cutting gives exactly the top-k."""
    return sorted(position.items(), key=lambda kv: kv[1].logprob, reverse=True)[:num_top]


def append_completion_logprobs(result: CompletionLogprobs, token_ids: Sequence[int], positions: Sequence[Position],
                               num_top: int, tokenizer: Any, text_offset: int) -> int:
    """Extend `result` with one entry per token; returns the text offset after the last token.
    `top_logprobs` holds the top `num_top` plus the chosen token (OpenAI: up to logprobs + 1)."""
    for token_id, position in zip(token_ids, positions):
        chosen = position.get(token_id) if position is not None else None
        token = _token_text(tokenizer, token_id, chosen)
        result.tokens.append(token)
        result.text_offset.append(text_offset)
        text_offset += len(token)
        if position is None:
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
            continue
        result.token_logprobs.append(_finite(chosen.logprob) if chosen is not None else None)
        top = {_token_text(tokenizer, t, lp): _finite(lp.logprob) for t, lp in _top(position, num_top)}
        if chosen is not None:
            top.setdefault(token, _finite(chosen.logprob))
        result.top_logprobs.append(top)
    return text_offset


def _chat_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode("utf-8", errors="replace"))}


def chat_logprobs(token_ids: Sequence[int], positions: Sequence[Position], num_top: int,
                  tokenizer: Any) -> ChatLogprobs:
    content = []
    for token_id, position in zip(token_ids, positions):
        if position is None:
            continue
        chosen = position.get(token_id)
        token = _token_text(tokenizer, token_id, chosen)
        top = [ChatTopLogprob(**_chat_entry(_token_text(tokenizer, t, lp), lp.logprob))
               for t, lp in _top(position, num_top)]
        logprob = chosen.logprob if chosen is not None else float("-inf")
        content.append(ChatTokenLogprob(**_chat_entry(token, logprob), top_logprobs=top))
    return ChatLogprobs(content=content)
