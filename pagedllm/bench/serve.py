"""`pagedllm bench serve`: online serving benchmark against a running OpenAI-compatible server,
by vLLM's method.

Random-token prompts (datasets.py) are sent as streaming completions (temperature 0, ignore_eos,
max_tokens = output length) with arrivals from a Poisson process, or gamma-distributed gaps with
--burstiness, at --request-rate (inf: all at once), at most --max-concurrency in flight. Each
stream is timed chunk by chunk (serve_metrics.py has the definitions); --request-rates runs a
sweep against the same server and saves every run in one JSON.

    pagedllm bench serve --num-prompts 64 --random-input-len 128 --random-output-len 64 \\
        --request-rates 2,4,8,inf --save-result --result-file sweep.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
import numpy as np

from pagedllm import envs
from pagedllm.bench.datasets import PROMPT_FORMATS, SampleRequest, Seed, sample_random_requests
from pagedllm.bench.serve_metrics import (
    RequestResult,
    calculate_metrics,
    format_table,
    parse_server_counters,
    server_counter_metrics,
    sweep_table,
)

# Random prompts share no block with each other, so any prefix-cache hit means the server had
# seen these prompts before (an earlier run with the same --seed): TTFT is then flattered.
MAX_CLEAN_HIT_RATE = 0.01


@dataclass(frozen=True)
class ServeBenchConfig:
    base_url: str  # e.g. http://127.0.0.1:8000, no trailing slash
    endpoint: str  # /v1/completions or /v1/chat/completions
    model: str | None  # None: the first of GET /v1/models
    tokenizer: str | None
    vocab_size: int | None  # token-id prompts without loading a tokenizer
    api_key: str | None
    num_prompts: int
    input_len: int
    output_len: int
    range_ratio: float
    prompt_format: str
    seed: int
    request_rates: tuple[float, ...]  # req/s; inf sends all at once
    burstiness: float
    max_concurrency: int | None
    num_warmups: int
    percentiles: tuple[float, ...]
    result_file: str | None  # None: print only
    save_detailed: bool
    request_timeout_s: float
    disable_tqdm: bool

    @property
    def is_chat(self) -> bool:
        return self.endpoint.rstrip("/").endswith("chat/completions")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeBenchConfig:
        base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
        rates = _parse_floats(args.request_rates) if args.request_rates else (args.request_rate,)
        percentiles = _parse_floats(args.percentiles)
        if any(r <= 0 for r in rates):
            raise ValueError(f"request rates must be > 0 (inf: all at once), got {rates}")
        if args.burstiness <= 0:
            raise ValueError(f"--burstiness must be > 0, got {args.burstiness}")
        if args.max_concurrency is not None and args.max_concurrency < 1:
            raise ValueError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
        if not percentiles or any(not 0 < p <= 100 for p in percentiles):
            raise ValueError(f"--percentiles must be in (0, 100], got {args.percentiles!r}")
        if args.endpoint.rstrip("/").endswith("chat/completions") and args.prompt_format != "text":
            raise ValueError("the chat endpoint takes text prompts: add --prompt-format text")
        result_file = args.result_file
        if args.save_result and result_file is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            result_file = f"serve-{len(rates)}rates-{stamp}.json"
        return cls(base_url, args.endpoint, args.model, args.tokenizer, args.vocab_size,
                   args.api_key, args.num_prompts, args.random_input_len, args.random_output_len,
                   args.random_range_ratio, args.prompt_format, args.seed, rates, args.burstiness,
                   args.max_concurrency, args.num_warmups, percentiles, result_file,
                   args.save_detailed, args.request_timeout, args.disable_tqdm)


def _parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from e


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """Flags named like vLLM's `vllm bench serve`."""
    parser.add_argument("--base-url", default=None, help="server URL; overrides --host/--port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--endpoint", default="/v1/completions")
    parser.add_argument("--model", default=None, help="model name to send (default: first of /v1/models)")
    parser.add_argument("--tokenizer", default=None,
                        help="HF folder or .gguf for prompt token ids (default: the model, if local)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="draw token ids from [0, N) without loading a tokenizer (token-ids format)")
    parser.add_argument("--api-key", default=envs.openai_api_key())
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--random-input-len", type=int, default=128)
    parser.add_argument("--random-output-len", type=int, default=128)
    parser.add_argument("--random-range-ratio", type=float, default=0.0,
                        help="lengths uniform in [L*(1-r), L*(1+r)]")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="token-ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request-rate", type=float, default=float("inf"), help="req/s; inf: all at once")
    parser.add_argument("--request-rates", default=None, help="sweep, e.g. 1,2,4,inf (overrides --request-rate)")
    parser.add_argument("--burstiness", type=float, default=1.0,
                        help="gamma shape of the arrival gaps; 1 is Poisson, < 1 burstier")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--num-warmups", type=int, default=1)
    parser.add_argument("--percentiles", default="99", help="comma-separated, e.g. 50,90,99")
    parser.add_argument("--save-result", action="store_true")
    parser.add_argument("--result-file", default=None, help="JSON path (implies --save-result)")
    parser.add_argument("--save-detailed", action="store_true", help="per-request timings in the JSON")
    parser.add_argument("--request-timeout", type=float, default=6 * 3600.0, help="seconds per request")
    parser.add_argument("--disable-tqdm", action="store_true")


def arrival_times(num_requests: int, rate: float, burstiness: float, seed: Seed) -> list[float]:
    """Send times in seconds from the start: first at 0, then gaps ~ Gamma(k=burstiness,
    theta=1/(rate*burstiness)), whose mean is 1/rate whatever the burstiness (k=1: Poisson)."""
    if rate == float("inf"):
        return [0.0] * num_requests
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=num_requests - 1)
    return [0.0] + [float(t) for t in np.cumsum(gaps)]


def build_payload(cfg: ServeBenchConfig, model: str, req: SampleRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model, "max_tokens": req.output_len, "temperature": 0.0, "ignore_eos": True,
        "stream": True, "stream_options": {"include_usage": True},
    }
    if cfg.is_chat:
        payload["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        payload["prompt"] = req.prompt
    return payload


def _chunk_text(chunk: dict[str, Any]) -> str:
    """Text a stream chunk carries. Role deltas, finish-only chunks and the usage chunk carry none;
    a token whose bytes the server's detokenizer holds back arrives merged into the next chunk,
    as any client sees it."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return (choice["delta"] or {}).get("content") or ""
    return choice.get("text") or ""


async def _read_stream(resp: aiohttp.ClientResponse, result: RequestResult, sent: float) -> int:
    """Time the token chunks of an SSE stream into `result`; returns the number of output tokens
    (usage's completion_tokens, else the number of token chunks)."""
    last = sent
    num_chunks, usage_tokens, done = 0, None, False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, SSE comments / keep-alives
        data = line[len(b"data:"):].strip()
        if data == b"[DONE]":
            done = True
            break
        now = time.perf_counter()
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"error in stream: {chunk['error']}")
        if chunk.get("usage"):
            usage_tokens = chunk["usage"].get("completion_tokens")
            result.prompt_len = chunk["usage"].get("prompt_tokens") or result.prompt_len
        if _chunk_text(chunk):
            if num_chunks == 0:
                result.ttft = now - sent
            else:
                result.itl.append(now - last)
            last, num_chunks = now, num_chunks + 1
    if not done:  # the server went away mid-stream: its timings and counts are not a result
        raise RuntimeError(f"stream ended without [DONE] after {num_chunks} token chunks")
    if num_chunks == 0:
        raise RuntimeError("stream ended without any token")
    return usage_tokens or num_chunks


async def send_request(session: aiohttp.ClientSession, cfg: ServeBenchConfig, payload: dict[str, Any],
                       prompt_len: int, bench_start: float) -> RequestResult:
    """One streaming request; never raises for a failed request, which comes back with its error."""
    result = RequestResult(prompt_len=prompt_len)
    sent = time.perf_counter()
    result.start = sent - bench_start
    try:
        async with session.post(cfg.base_url + cfg.endpoint, json=payload, headers=_headers(cfg)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
            result.output_len = await _read_stream(resp, result, sent)
        result.success = True
    except Exception as e:  # any failure is this request's result, never the run's end
        result.error = f"{type(e).__name__}: {e}"
    result.latency = time.perf_counter() - sent
    return result


def _headers(cfg: ServeBenchConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}


async def fetch_model(session: aiohttp.ClientSession, cfg: ServeBenchConfig) -> str:
    """The first model the server lists."""
    url = cfg.base_url + "/v1/models"
    try:
        async with session.get(url, headers=_headers(cfg)) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(body, dict) or not body.get("data"):
                raise ValueError(f"GET {url} gave HTTP {resp.status}: {str(body)[:300]}")
            return str(body["data"][0]["id"])
    except aiohttp.ClientError as e:
        raise ValueError(f"cannot reach the server at {cfg.base_url}: {e}") from e


async def scrape_server_counters(session: aiohttp.ClientSession, cfg: ServeBenchConfig) -> dict[str, float] | None:
    """The server's prefix-cache and preemption counters from GET /metrics; None if it has none."""
    try:
        async with session.get(cfg.base_url + "/metrics", headers=_headers(cfg)) as resp:
            return parse_server_counters(await resp.text()) if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def run_rate(session: aiohttp.ClientSession, cfg: ServeBenchConfig, model: str,
                   requests: list[SampleRequest], rate: float, seed: Seed) -> tuple[list[RequestResult], float]:
    """Send `requests` at `rate`; returns their results and the wall time until the last ended."""
    times = arrival_times(len(requests), rate, cfg.burstiness, seed)
    limit = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    pbar = _progress(cfg, len(requests), rate)
    start = time.perf_counter()

    async def one(req: SampleRequest, at: float) -> RequestResult:
        # Absolute send times, so a slow event loop does not stretch the arrival process.
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        payload = build_payload(cfg, model, req)
        if limit is None:
            result = await send_request(session, cfg, payload, req.prompt_len, start)
        else:
            async with limit:
                result = await send_request(session, cfg, payload, req.prompt_len, start)
        if pbar is not None:
            pbar.update(1)
        return result

    results = await asyncio.gather(*(one(r, t) for r, t in zip(requests, times)))
    duration = time.perf_counter() - start
    if pbar is not None:
        pbar.close()
    return list(results), duration


def _progress(cfg: ServeBenchConfig, total: int, rate: float) -> Any:
    if cfg.disable_tqdm:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"rate {rate:g}", file=sys.stderr)


def load_prompt_vocab(cfg: ServeBenchConfig, model: str) -> tuple[Any, int, list[int]]:
    """(tokenizer or None, vocab size, special ids) to draw prompts from."""
    if cfg.vocab_size is not None and cfg.prompt_format == "token-ids":
        return None, cfg.vocab_size, []
    from pagedllm.engine.tokenizer import load_tokenizer
    from pagedllm.models.source import ModelSource, resolve_model_source

    if cfg.tokenizer is not None and os.path.isdir(cfg.tokenizer):
        tokenizer = load_tokenizer(ModelSource(cfg.tokenizer), cfg.tokenizer)
    else:
        try:
            source = resolve_model_source(cfg.tokenizer or model)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"no local tokenizer for model {model!r} ({e}); pass --tokenizer") from e
        tokenizer = load_tokenizer(source)
    return tokenizer, len(tokenizer), list(tokenizer.all_special_ids)


def run_result(cfg: ServeBenchConfig, rate: float, results: list[RequestResult], duration: float,
               server_metrics: dict[str, Any]) -> dict[str, Any]:
    """One rate's JSON entry: its metrics, what the server counted meanwhile, the errors of failed
    requests counted by message, and with --save-detailed every request's timings."""
    out: dict[str, Any] = {"request_rate": "inf" if rate == float("inf") else rate}
    out.update(calculate_metrics(results, duration, list(cfg.percentiles)))
    out.update(server_metrics)
    out["errors"] = dict(Counter(r.error for r in results if not r.success))
    if cfg.save_detailed:
        out["requests"] = [asdict(r) for r in results]
    return out


async def run_benchmark(cfg: ServeBenchConfig) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s)
    # limit=0: no client-side cap on connections, or aiohttp's default of 100 would throttle "inf".
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        model = cfg.model or await fetch_model(session, cfg)
        tokenizer, vocab_size, special_ids = load_prompt_vocab(cfg, model)

        def sample(num: int, seed: Seed) -> list[SampleRequest]:
            return sample_random_requests(num, cfg.input_len, cfg.output_len, seed=seed, vocab_size=vocab_size,
                                          special_ids=special_ids, range_ratio=cfg.range_ratio,
                                          prompt_format=cfg.prompt_format, tokenizer=tokenizer)

        # The warmup and each rate get their own prompts, seeded (seed, 0) and (seed, i + 1): re-sent
        # prompts would hit the server's prefix cache and flatter every run after the first. Seed
        # pairs, not seed + i, so that --seed 1 after --seed 0 sends no prompt again either.
        if cfg.num_warmups > 0:
            warm, _ = await run_rate(session, cfg, model, sample(cfg.num_warmups, (cfg.seed, 0)), float("inf"),
                                     (cfg.seed, 0))
            if not all(r.success for r in warm):
                raise ValueError(f"warmup request failed: {next(r.error for r in warm if not r.success)}")
        runs = []
        for i, rate in enumerate(cfg.request_rates):
            before = await scrape_server_counters(session, cfg)
            results, duration = await run_rate(session, cfg, model, sample(cfg.num_prompts, (cfg.seed, i + 1)),
                                               rate, (cfg.seed, i + 1))
            server = server_counter_metrics(before, await scrape_server_counters(session, cfg))
            runs.append(run_result(cfg, rate, results, duration, server))
            _print_run(cfg, runs[-1])
    return _result_doc(cfg, model, runs)


def _print_run(cfg: ServeBenchConfig, run: dict[str, Any]) -> None:
    conc = cfg.max_concurrency or "unlimited"
    print(f"\nRequest rate: {run['request_rate']} req/s, burstiness {cfg.burstiness:g}, max concurrency {conc}")
    print(format_table(run, list(cfg.percentiles)))
    for error, count in run["errors"].items():
        print(f"failed x{count}: {error}")
    hit_rate = run.get("server_prefix_cache_hit_rate")
    if hit_rate is not None and hit_rate > MAX_CLEAN_HIT_RATE:
        print(f"WARNING: the server's prefix cache served {100 * hit_rate:.0f}% of prompt tokens: these prompts "
              "were sent before (same --seed?). Use a new --seed or restart the server for clean TTFTs.")


def _result_doc(cfg: ServeBenchConfig, model: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": "openai", "base_url": cfg.base_url, "endpoint": cfg.endpoint, "model": model,
        "tokenizer": cfg.tokenizer, "num_prompts": cfg.num_prompts, "random_input_len": cfg.input_len,
        "random_output_len": cfg.output_len, "random_range_ratio": cfg.range_ratio,
        "prompt_format": cfg.prompt_format, "seed": cfg.seed, "burstiness": cfg.burstiness,
        "max_concurrency": cfg.max_concurrency, "num_warmups": cfg.num_warmups,
        "percentiles": list(cfg.percentiles),
        "request_rates": ["inf" if r == float("inf") else r for r in cfg.request_rates],
        "runs": runs,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = ServeBenchConfig.from_args(args)
    doc = asyncio.run(run_benchmark(cfg))
    if len(doc["runs"]) > 1:
        print("\n" + sweep_table(doc["runs"], cfg.percentiles))
    if cfg.result_file:
        with open(cfg.result_file, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"Saved results to {cfg.result_file}")
    return doc


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m pagedllm.bench.serve", description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_args(_parser)
    try:
        main(_parser.parse_args())
    except ValueError as _e:
        print(f"error: {_e}", file=sys.stderr)
        sys.exit(2)
