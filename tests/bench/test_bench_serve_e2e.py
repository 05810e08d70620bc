"""`bench serve` end to end against the fake streaming server of conftest.py."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from pagedllm.bench import serve
from tests.helpers.fake_openai_server import CHAT_PROMPT_TOKENS, ITL_S, MODEL, TTFT_S, FakeServerState

VOCAB = 500
# Generous upper slack: the machine is shared; the lower bounds are what the server guarantees.
SLACK_S = 0.5


def _run(server: FakeServerState, *extra: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args(["--base-url", server.base_url, "--vocab-size", str(VOCAB), "--disable-tqdm",
                              "--random-input-len", "32", "--random-output-len", "8", *extra])
    return serve.main(args)


def test_stream_timings_tokens_and_payload(fake_server: FakeServerState, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _run(fake_server, "--num-prompts", "10", "--percentiles", "50,99")
    assert doc["model"] == MODEL and len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert (run["completed"], run["failed"], run["errors"]) == (10, 0, {})
    assert run["total_input_tokens"] == 10 * 32
    assert run["total_output_tokens"] == 10 * 8  # from usage: 8 tokens in 7 chunks
    assert run["request_rate"] == "inf" and run["peak_concurrency"] == 10
    assert TTFT_S <= run["mean_ttft_ms"] / 1000 < TTFT_S + SLACK_S
    assert 0.8 * ITL_S <= run["median_itl_ms"] / 1000 < ITL_S + SLACK_S
    # TPOT spreads 6 gaps over 7 tokens after the first (the first chunk carried two).
    assert run["mean_tpot_ms"] / 1000 < run["mean_itl_ms"] / 1000
    e2e_min = TTFT_S + 6 * ITL_S
    assert e2e_min <= run["mean_e2el_ms"] / 1000 < e2e_min + SLACK_S
    assert run["mean_e2el_ms"] - run["mean_ttft_ms"] >= 6 * ITL_S * 1000 * 0.9
    assert run["request_throughput"] == pytest.approx(10 / run["duration_s"])
    # 1 warmup + 10 requests, each as vLLM sends it.
    assert len(fake_server.payloads) == 11
    for p in fake_server.payloads:
        assert p["model"] == MODEL and p["stream"] is True and p["ignore_eos"] is True
        assert p["temperature"] == 0 and p["max_tokens"] == 8 and p["stream_options"] == {"include_usage": True}
        assert len(p["prompt"]) == 32 and all(isinstance(t, int) and 0 <= t < VOCAB for t in p["prompt"])
    assert "Serving Benchmark Result" in capsys.readouterr().out


def test_output_tokens_fall_back_to_chunk_count_without_usage(fake_server: FakeServerState) -> None:
    fake_server.send_usage = False
    run = _run(fake_server, "--num-prompts", "4", "--num-warmups", "0")["runs"][0]
    assert run["completed"] == 4 and run["total_output_tokens"] == 4 * 7
    assert run["total_input_tokens"] == 4 * 32  # the prompts' own lengths


def test_failed_requests_are_counted_with_their_errors(fake_server: FakeServerState) -> None:
    fake_server.fail_http = {3}  # arrival numbers; 1 is the warmup
    fake_server.fail_stream = {5, 6}
    fake_server.fail_truncate = {9}
    run = _run(fake_server, "--num-prompts", "8", "--max-concurrency", "1")["runs"][0]
    assert (run["completed"], run["failed"]) == (4, 4)
    assert run["total_output_tokens"] == 4 * 8 and run["total_input_tokens"] == 4 * 32
    errors = run["errors"]
    assert sum(errors.values()) == 4
    assert any("HTTP 500" in e and "boom" in e and n == 1 for e, n in errors.items())
    assert any("engine died" in e and n == 2 for e, n in errors.items())
    assert any("without [DONE]" in e and n == 1 for e, n in errors.items())


def test_max_concurrency_is_respected(fake_server: FakeServerState) -> None:
    run = _run(fake_server, "--num-prompts", "12", "--max-concurrency", "3", "--num-warmups", "0")["runs"][0]
    assert run["completed"] == 12
    assert fake_server.peak_in_flight == 3
    assert run["peak_concurrency"] <= 3
    # 4 waves of 3, each at least TTFT + 6 ITL long.
    assert run["duration_s"] >= 4 * (TTFT_S + 6 * ITL_S)


def test_rate_sweep_writes_one_json_with_every_rate(fake_server: FakeServerState, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep.json"
    doc = _run(fake_server, "--num-prompts", "6", "--request-rates", "20,inf", "--result-file", str(out),
               "--save-detailed")
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(doc))
    assert saved["request_rates"] == [20.0, "inf"] and saved["num_prompts"] == 6
    assert saved["random_input_len"] == 32 and saved["random_output_len"] == 8 and saved["model"] == MODEL
    assert "date" in saved and saved["max_concurrency"] is None
    assert [r["request_rate"] for r in saved["runs"]] == [20.0, "inf"]
    assert all(r["completed"] == 6 and len(r["requests"]) == 6 for r in saved["runs"])
    # Paced at 20 req/s, the sixth request starts about 5 gaps (~0.25 s) after the first.
    starts = sorted(r["start"] for r in saved["runs"][0]["requests"])
    assert starts[-1] > 0.05
    # Each rate gets its own prompts, so a server's prefix cache cannot flatter later runs.
    prompts = [tuple(p["prompt"]) for p in fake_server.payloads]
    assert len(set(prompts)) == len(prompts) == 1 + 12
    table = capsys.readouterr().out
    assert "| rate (req/s) |" in table and "| 20.0 | 6/0 |" in table and "| inf | 6/0 |" in table


def test_bad_input_raises_value_error(fake_server: FakeServerState) -> None:
    with pytest.raises(ValueError):
        _run(fake_server, "--request-rates", "0,inf")
    with pytest.raises(ValueError):
        _run(fake_server, "--endpoint", "/v1/chat/completions")  # token ids cannot go in a chat message
    with pytest.raises(ValueError, match="cannot reach"):
        _run(FakeServerState(base_url="http://127.0.0.1:9"), "--num-prompts", "1")


class _WordTokenizer:
    """Word-level ids: decode/encode round-trip exactly."""

    all_special_ids = [0]

    def __len__(self) -> int:
        return VOCAB

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(w[1:]) for w in text.split()]


def test_chat_endpoint_with_text_prompts(fake_server: FakeServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _WordTokenizer()
    monkeypatch.setattr(serve, "load_prompt_vocab", lambda cfg, model: (tok, len(tok), tok.all_special_ids))
    run = _run(fake_server, "--endpoint", "/v1/chat/completions", "--prompt-format", "text",
               "--num-prompts", "4")["runs"][0]
    assert (run["completed"], run["failed"]) == (4, 0)
    assert run["total_input_tokens"] == 4 * CHAT_PROMPT_TOKENS  # the server's usage wins
    assert run["total_output_tokens"] == 4 * 8
    assert run["mean_ttft_ms"] / 1000 >= TTFT_S  # the role delta is no token
    for p in fake_server.payloads:
        (message,) = p["messages"]
        assert message["role"] == "user" and len(tok.encode(message["content"])) == 32 and "prompt" not in p


def test_prompts_the_server_has_cached_are_flagged(fake_server: FakeServerState,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    first = _run(fake_server, "--num-prompts", "4")["runs"][0]
    assert first["server_prefix_cache_hit_rate"] == 0.0 and first["server_preemptions"] == 0
    assert "WARNING" not in capsys.readouterr().out
    again = _run(fake_server, "--num-prompts", "4")["runs"][0]  # same seed: the same prompts
    assert again["server_prefix_cache_hit_rate"] == 1.0
    out = capsys.readouterr().out
    assert "Prefix cache hit rate (server, %):       100.0" in out and "WARNING" in out and "--seed" in out
    fresh = _run(fake_server, "--num-prompts", "4", "--seed", "1")["runs"][0]
    assert fresh["server_prefix_cache_hit_rate"] == 0.0
