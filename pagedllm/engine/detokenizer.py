"""Incremental detokenization of one request's output, with stop strings.

Tokens arrive a few at a time; text must come out as soon as it is final. Byte-level BPE splits
multi-byte characters across tokens, so a token may end in the middle of a character: that text
is held until the character is complete (never emitted as U+FFFD).

Two token decoders do this:
- `_StreamDecoder`: `tokenizers.decoders.DecodeStream` (Rust), for fast tokenizers (as vLLM).
- `_OffsetDecoder`: the prefix-offset / read-offset method (HF TGI, vLLM) for slow tokenizers:
  decode a short window of tokens with and without the new ones and emit the difference, unless
  it ends in U+FFFD (an unfinished character).
"""
from __future__ import annotations

from typing import Any

from pagedllm.engine.stop_strings import find_stop_string, partial_stop_length

# DecodeStream's error when the tokenizer's output is not monotonic (vllm issue 17448); we restart it.
_INVALID_PREFIX_ERR = "Invalid prefix encountered"
_REPLACEMENT_CHAR = "\ufffd"
# How much prompt context the decoders start from (so e.g. a leading space decodes as in context).
_MAX_PROMPT_CONTEXT = 24
_OFFSET_PROMPT_CONTEXT = 5  # prompt tokens the offset decoder keeps before its read offset


def decode_token(tokenizer: Any, token_id: int) -> str:
    """One token's text, e.g. for a logprob's `decoded_token` (a lone part of a multi-byte
    character decodes to U+FFFD, as in vLLM)."""
    return tokenizer.decode([token_id])


class IncrementalDetokenizer:
    """Text of one request's output tokens, built as they arrive, cut at the first stop string."""

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True, stop: list[str] | None = None,
                 include_stop_str_in_output: bool = False, min_tokens: int = 0,
                 use_decode_stream: bool | None = None) -> None:
        """`tokenizer` None: no text (detokenize=False), tokens are only counted.
        `min_tokens`: stop strings are not looked for within the first min_tokens tokens' text.
        `use_decode_stream`: force the decoder (default: DecodeStream for fast tokenizers)."""
        self.stop = list(stop or [])
        self.include_stop_str_in_output = include_stop_str_in_output
        self.min_tokens = min_tokens
        self.token_ids: list[int] = []  # output tokens so far
        self.output_text = ""
        self._sent_offset = 0  # chars of output_text already returned by get_next_output_text(delta=True)
        self._decoder: _StreamDecoder | _OffsetDecoder | None = None
        if tokenizer is not None:
            if use_decode_stream is None:
                use_decode_stream = _backend_tokenizer(tokenizer) is not None
            if use_decode_stream:
                self._decoder = _StreamDecoder(tokenizer, prompt_token_ids, skip_special_tokens)
            else:
                self._decoder = _OffsetDecoder(tokenizer, prompt_token_ids, skip_special_tokens,
                                               spaces_between_special_tokens)

    def update(self, new_token_ids: list[int], stop_terminated: bool = False) -> str | None:
        """Append `new_token_ids`, extend `output_text`; return the stop string if one now appears.

        Then `output_text` is cut before the stop string (after it if include_stop_str_in_output).
        Stop strings are looked for after each token, as a step-by-step decode would: tokens after
        the one that completes a stop string (several arrive at once with speculative decoding) are
        dropped, so `token_ids` ends with it. `stop_terminated`: the last token is a stop token
        (EOS / stop_token_ids); its text is left out unless include_stop_str_in_output.
        """
        if not new_token_ids:
            return None
        skipped = None
        if stop_terminated and not self.include_stop_str_in_output:
            skipped, new_token_ids = new_token_ids[-1], new_token_ids[:-1]
        if self.stop and len(new_token_ids) > 1:
            for token_id in new_token_ids:
                stop_str = self._append([token_id])
                if stop_str is not None:
                    return stop_str
        else:
            stop_str = self._append(new_token_ids)
            if stop_str is not None:
                return stop_str
        if skipped is not None:
            self.token_ids.append(skipped)
        return None

    def _append(self, new_token_ids: list[int]) -> str | None:
        stop_check_offset = len(self.output_text)
        for token_id in new_token_ids:
            self.token_ids.append(token_id)
            if self._decoder is not None:
                self.output_text += self._decoder.decode_next(token_id)
            if len(self.token_ids) <= self.min_tokens:
                stop_check_offset = len(self.output_text)  # no stop string inside min_tokens' text
        if not self.stop or len(self.token_ids) <= self.min_tokens:
            return None
        found = find_stop_string(self.output_text, len(self.output_text) - stop_check_offset, self.stop,
                                 self.include_stop_str_in_output)
        if found is None:
            return None
        stop_str, truncate_to = found
        if truncate_to != -1:
            self.output_text = self.output_text[:truncate_to]
        return stop_str

    def get_next_output_text(self, finished: bool, delta: bool) -> str:
        """The text to send now: all of it (delta False) or what is new since the last delta call.

        While not finished, trailing chars that could start a stop string are held back, so no part
        of a stop string is ever sent (with include_stop_str_in_output nothing needs holding back).
        """
        end = len(self.output_text)
        if not finished and self.stop and not self.include_stop_str_in_output:
            end -= partial_stop_length(self.output_text, self.stop)
        if not delta:
            return self.output_text[:end]
        start = self._sent_offset
        if start >= end:
            return ""
        self._sent_offset = end
        return self.output_text[start:end]


def _backend_tokenizer(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a fast HF tokenizer, else None."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    return getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)


class _StreamDecoder:
    """Token -> new text with `tokenizers.decoders.DecodeStream`, primed with the prompt's end."""

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], skip_special_tokens: bool) -> None:
        from tokenizers.decoders import DecodeStream

        self._make_stream = lambda: DecodeStream(skip_special_tokens=skip_special_tokens)
        self._tokenizer = _backend_tokenizer(tokenizer)
        self._stream = self._make_stream()
        for token_id in self._prompt_context(prompt_token_ids):
            self._step(token_id)

    def _prompt_context(self, prompt_token_ids: list[int]) -> list[int]:
        # Start a few tokens back, at a token that begins a character (its text has no U+FFFD),
        # so that the first output token decodes as it does in context (vLLM does the same).
        if len(prompt_token_ids) <= 4:
            return prompt_token_ids
        for n in range(4, min(len(prompt_token_ids), _MAX_PROMPT_CONTEXT) + 1):
            suffix = prompt_token_ids[-n:]
            if _REPLACEMENT_CHAR not in self._tokenizer.decode(suffix, skip_special_tokens=False):
                return suffix
        return prompt_token_ids[-_MAX_PROMPT_CONTEXT:]

    def decode_next(self, token_id: int) -> str:
        return self._step(token_id) or ""

    def _step(self, token_id: int) -> str | None:
        try:
            return self._stream.step(self._tokenizer, token_id)
        except Exception as e:  # tokenizers raises a plain Exception
            if _INVALID_PREFIX_ERR not in str(e):
                raise
            self._stream = self._make_stream()
            return self._stream.step(self._tokenizer, token_id)


class _OffsetDecoder:
    """Token -> new text with the prefix-offset / read-offset method, for any HF tokenizer.

        tokens:  ... | prefix_offset ... read_offset | new tokens
        emit  decode(tokens[prefix_offset:]) minus decode(tokens[prefix_offset:read_offset])

    The prefix gives context (spaces, merges) without being emitted again.
    """

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], skip_special_tokens: bool,
                 spaces_between_special_tokens: bool) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._spaces_between_special_tokens = spaces_between_special_tokens
        self._added_vocab = set(tokenizer.get_added_vocab())
        self._special_tokens = set(tokenizer.all_special_tokens)
        self._vocab_len = len(tokenizer)
        context = prompt_token_ids[-(_OFFSET_PROMPT_CONTEXT + 2):]
        self._tokens: list[str] = self._to_tokens(context)
        self._prefix_offset = max(len(self._tokens) - _OFFSET_PROMPT_CONTEXT, 0)
        self._read_offset = len(self._tokens)

    def decode_next(self, token_id: int) -> str:
        self._tokens.extend(self._to_tokens([token_id]) if 0 <= token_id < self._vocab_len else [""])
        prefix_text = self._to_string(self._tokens[self._prefix_offset:self._read_offset])
        new_text = self._to_string(self._tokens[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT_CHAR):
            # Nothing new, or an unfinished multi-byte character: wait for the next token.
            # (A U+FFFD in the middle is a real invalid sequence and is emitted.)
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._tokens)
        return new_text[len(prefix_text):]

    def _to_tokens(self, token_ids: list[int]) -> list[str]:
        tokens = self._tokenizer.convert_ids_to_tokens(token_ids, skip_special_tokens=self._skip_special_tokens)
        return [tokens] if isinstance(tokens, str) else list(tokens)

    def _to_string(self, tokens: list[str]) -> str:
        if getattr(self._tokenizer, "is_fast", False) or not self._added_vocab:
            return self._tokenizer.convert_tokens_to_string(tokens)
        return self._to_string_with_added_tokens(tokens)

    def _to_string_with_added_tokens(self, tokens: list[str]) -> str:
        # Slow tokenizers do not decode added tokens themselves: decode the runs between them and
        # join, with spaces if spaces_between_special_tokens (as HF's slow `decode` does).
        pieces: list[str] = []
        run: list[str] = []
        for token in tokens:
            if self._skip_special_tokens and token in self._special_tokens:
                continue
            if token in self._added_vocab:
                if run:
                    pieces.append(self._tokenizer.convert_tokens_to_string(run))
                    run = []
                pieces.append(token)
            else:
                run.append(token)
        if run:
            pieces.append(self._tokenizer.convert_tokens_to_string(run))
        return (" " if self._spaces_between_special_tokens else "").join(pieces)
