"""IncrementalDetokenizer on the real SmolLM2 byte-level BPE tokenizer: incremental text equals
tokenizer.decode(all), multi-byte characters split across tokens, special tokens, stop strings."""
from __future__ import annotations

import os
import random

import pytest

from pagedllm.engine.detokenizer import IncrementalDetokenizer, decode_token

TEXTS = [
    "Hello 🤗 world, 世界 is big.",
    "日本語のテキスト👨‍👩‍👧 family 🇫🇷 naïve café",
    " leading space\n\nnew lines  and  double spaces\t tab",
    "😀😃😄😁 emoji only 🧑🏽‍💻",
]
REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from pagedllm.models.source import default_model_file

    try:
        path = default_model_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


@pytest.fixture(scope="module")
def prompt(tok) -> list[int]:
    return tok.encode("<|im_start|>user\nSay something 中文<|im_end|>\n<|im_start|>assistant\n",
                      add_special_tokens=False)


def _stream(detok: IncrementalDetokenizer, ids: list[int], chunk_sizes: list[int] | None = None,
            stop_terminated: bool = False) -> tuple[str | None, list[str]]:
    """Feed `ids` in chunks, collecting streamed deltas; the last delta is taken as finished."""
    deltas, i, stop_str = [], 0, None
    sizes = iter(chunk_sizes or [])
    while i < len(ids) and stop_str is None:
        n = next(sizes, 1)
        chunk = ids[i:i + n]
        i += n
        stop_str = detok.update(chunk, stop_terminated=stop_terminated and i >= len(ids))
        if stop_str is None and i < len(ids):
            deltas.append(detok.get_next_output_text(finished=False, delta=True))
    deltas.append(detok.get_next_output_text(finished=True, delta=True))
    return stop_str, deltas


@pytest.mark.parametrize("use_decode_stream", [True, False], ids=["decode_stream", "offsets"])
@pytest.mark.parametrize("text", TEXTS)
def test_incremental_equals_full_decode(tok, prompt, text, use_decode_stream):
    ids = tok.encode(text, add_special_tokens=False)
    # the test only means something if some tokens end inside a multi-byte character
    if any(ord(c) > 127 for c in text):
        assert any(REPLACEMENT in tok.decode([t]) for t in ids)
    expected = tok.decode(ids)
    rng = random.Random(0)
    for chunks in (None, [rng.randint(1, 4) for _ in ids]):
        detok = IncrementalDetokenizer(tok, prompt, use_decode_stream=use_decode_stream)
        stop_str, deltas = _stream(detok, ids, chunks)
        assert stop_str is None
        assert detok.output_text == expected == "".join(deltas)
        assert not any(REPLACEMENT in d for d in deltas)
        assert detok.token_ids == ids


@pytest.mark.parametrize("use_decode_stream", [True, False], ids=["decode_stream", "offsets"])
def test_character_is_emitted_when_complete(tok, use_decode_stream):
    ids = tok.encode(" 🤗", add_special_tokens=False)
    assert len(ids) > 1
    detok = IncrementalDetokenizer(tok, [], use_decode_stream=use_decode_stream)
    for t in ids[:-1]:
        detok.update([t])
        assert REPLACEMENT not in detok.output_text
    detok.update(ids[-1:])
    assert detok.output_text == " 🤗"


@pytest.mark.parametrize("use_decode_stream", [True, False], ids=["decode_stream", "offsets"])
@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(tok, prompt, skip, use_decode_stream):
    ids = tok.encode("Hi there<|im_end|>\n<|im_start|>user\n🤗 ok<|endoftext|>", add_special_tokens=False)
    assert {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} <= set(ids)
    detok = IncrementalDetokenizer(tok, prompt, skip_special_tokens=skip, use_decode_stream=use_decode_stream)
    _, deltas = _stream(detok, ids)
    assert detok.output_text == "".join(deltas) == tok.decode(ids, skip_special_tokens=skip)
    assert ("<|im_end|>" in detok.output_text) is not skip


def _straddles(tok, ids: list[int], stop: str) -> bool:
    return stop in tok.decode(ids) and not any(stop in tok.decode([t]) for t in ids)


@pytest.mark.parametrize("use_decode_stream", [True, False], ids=["decode_stream", "offsets"])
@pytest.mark.parametrize("text,stop", [
    ("Hello world, how are you today?", "w are y"),
    ("我爱北京天安门 and more text", "北京天"),
    ("Sure! 🤗🤗 Here it is. END of story", "🤗 Here"),
    ("a line\n\nUser: next question", "\n\nUser:"),
])
def test_stop_string_straddling_tokens(tok, prompt, text, stop, use_decode_stream):
    ids = tok.encode(text, add_special_tokens=False)
    assert _straddles(tok, ids, stop)
    before = text[: text.index(stop)]
    for include in (False, True):
        detok = IncrementalDetokenizer(tok, prompt, stop=["never", stop], include_stop_str_in_output=include,
                                       use_decode_stream=use_decode_stream)
        sent = ""
        stop_str, deltas = _stream(detok, ids)
        assert stop_str == stop
        assert detok.output_text == (before + stop if include else before)
        for d in deltas:
            sent += d
            assert detok.output_text.startswith(sent)  # nothing sent is ever taken back
        assert sent == detok.output_text
        assert REPLACEMENT not in sent


def test_stream_holds_back_only_possible_stop_prefixes(tok):
    ids = tok.encode("one two three four", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], stop=["thr", "xyz"])
    detok.update(ids[:2])  # "one two"
    assert detok.get_next_output_text(finished=False, delta=True) == "one two"
    detok.update(tok.encode(" th", add_special_tokens=False))  # " th" may start "thr": hold it
    assert detok.output_text == "one two th"
    assert detok.get_next_output_text(finished=False, delta=True) == " "
    assert detok.get_next_output_text(finished=False, delta=False) == "one two "
    assert detok.update(tok.encode("rive", add_special_tokens=False)) == "thr"
    assert detok.output_text == "one two "
    assert detok.get_next_output_text(finished=True, delta=True) == ""


def test_stop_found_mid_update_truncates_later_tokens(tok):
    # several tokens in one update (e.g. speculative decoding): text after the stop string is cut
    ids = tok.encode("alpha beta STOP gamma delta", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], stop=["STOP"])
    assert detok.update(ids) == "STOP"
    assert detok.output_text == "alpha beta "
    detok = IncrementalDetokenizer(tok, [], stop=["STOP"], include_stop_str_in_output=True)
    assert detok.update(ids) == "STOP"
    assert detok.output_text == "alpha beta STOP"


def test_stop_strings_checked_after_each_token(tok):
    # As a step-by-step decode would: the stop string completed by the earliest token wins, and
    # tokens after it are dropped (several arrive at once with speculative decoding).
    ids = tok.encode("x = 1; y = 2", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], stop=["y =", "1"])
    assert detok.update(ids) == "1"
    assert detok.output_text == "x = "
    assert tok.decode(detok.token_ids) == "x = 1"


def test_first_listed_stop_string_wins_within_one_token(tok):
    ids = tok.encode("x = 1; y = 2", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], stop=["= 1", "1"])
    assert detok.update(ids) == "= 1"
    assert detok.output_text == "x "


def test_min_tokens_ignores_stop_strings_in_its_text(tok):
    ids = tok.encode(" stop here and stop again", add_special_tokens=False)
    n_first = len(tok.encode(" stop here", add_special_tokens=False))
    detok = IncrementalDetokenizer(tok, [], stop=["stop"], min_tokens=n_first)
    stop_str, _ = _stream(detok, ids)
    assert stop_str == "stop"
    assert detok.output_text == " stop here and "


def test_stop_terminated_leaves_out_stop_token_text(tok):
    ids = tok.encode("Answer: yes", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=False)
    detok.update(ids, stop_terminated=True)
    assert detok.output_text == "Answer: yes" and detok.token_ids == ids
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=False, include_stop_str_in_output=True)
    detok.update(ids, stop_terminated=True)
    assert detok.output_text == "Answer: yes<|im_end|>"


def test_no_tokenizer_counts_tokens_only():
    detok = IncrementalDetokenizer(None, [1, 2], stop=["x"])
    assert detok.update([5, 6]) is None
    assert detok.token_ids == [5, 6] and detok.output_text == ""


def test_decode_token(tok):
    ids = tok.encode(" hello 世", add_special_tokens=False)
    assert decode_token(tok, ids[0]) == " hello"
    assert decode_token(tok, tok.convert_tokens_to_ids("<|im_end|>")) == "<|im_end|>"
    assert decode_token(tok, ids[-1]) == "\ufffd"  # a lone part of a 3-byte character
