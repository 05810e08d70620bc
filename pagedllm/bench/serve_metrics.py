"""Per-request timings of the serving benchmark and the summary metrics computed from them.

Definitions (vLLM's):
  TTFT  time from sending the request to the first chunk carrying a token
  ITL   every gap between consecutive token chunks (pooled over all requests)
  TPOT  per request: (E2E - TTFT) / (output_tokens - 1), only for requests with > 1 output token
  E2E   time from sending the request to the end of its stream

  t=0 send        first token                                     stream end
     |---- TTFT ----|-- itl[0] --|-- itl[1] --| ... |-- itl[k] --|    |
     |------------------------------- E2E -----------------------------|
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATENCY_METRICS = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
                   "itl": "Inter-token Latency", "e2el": "End-to-end Latency"}


@dataclass
class RequestResult:
    prompt_len: int
    success: bool = False
    output_len: int = 0  # tokens: the server's usage count, else the number of token chunks
    ttft: float = 0.0  # seconds
    itl: list[float] = field(default_factory=list)  # seconds, [num_token_chunks - 1]
    latency: float = 0.0  # seconds, end to end
    start: float = 0.0  # seconds since the benchmark started
    error: str = ""


def tpot(result: RequestResult) -> float | None:
    """Mean time per output token after the first; None when there is no second token."""
    if not result.success or result.output_len < 2:
        return None
    return (result.latency - result.ttft) / (result.output_len - 1)


def percentile_key(p: float) -> str:
    """99 -> "p99", 99.9 -> "p99.9"."""
    return f"p{int(p)}" if float(p).is_integer() else f"p{p}"


def latency_stats(values_s: list[float], percentiles: list[float]) -> dict[str, float]:
    """mean/median/std and the asked percentiles, in milliseconds (zeros for no values)."""
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, **{percentile_key(p): 0.0 for p in percentiles}}
    stats = {"mean": float(ms.mean()), "median": float(np.median(ms)), "std": float(ms.std())}
    stats.update({percentile_key(p): float(np.percentile(ms, p)) for p in percentiles})
    return stats


def peak_concurrency(results: list[RequestResult]) -> int:
    """Most requests in flight at once, from their [start, start + latency) intervals."""
    events = sorted([(r.start, 1) for r in results] + [(r.start + r.latency, -1) for r in results],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def calculate_metrics(results: list[RequestResult], duration_s: float, percentiles: list[float]) -> dict[str, Any]:
    """Summary of one benchmark run; latency keys are like "mean_ttft_ms", "p99_itl_ms"."""
    if duration_s <= 0:
        raise ValueError(f"benchmark duration must be positive, got {duration_s}")
    ok = [r for r in results if r.success]
    total_input = sum(r.prompt_len for r in ok)
    total_output = sum(r.output_len for r in ok)
    metrics: dict[str, Any] = {
        "duration_s": duration_s,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": total_output / duration_s,
        "total_token_throughput": (total_input + total_output) / duration_s,
        "peak_concurrency": peak_concurrency(results),
    }
    samples = {
        "ttft": [r.ttft for r in ok],
        "tpot": [t for t in (tpot(r) for r in ok) if t is not None],
        "itl": [gap for r in ok for gap in r.itl],
        "e2el": [r.latency for r in ok],
    }
    for name, values in samples.items():
        for stat, value in latency_stats(values, percentiles).items():
            metrics[f"{stat}_{name}_ms"] = value
    return metrics


def format_table(metrics: dict[str, Any], percentiles: list[float]) -> str:
    """The result block vLLM prints, one `label: value` row per line."""
    rows = [
        ("Successful requests:", metrics["completed"]),
        ("Failed requests:", metrics["failed"]),
        ("Benchmark duration (s):", f"{metrics['duration_s']:.2f}"),
        ("Total input tokens:", metrics["total_input_tokens"]),
        ("Total generated tokens:", metrics["total_output_tokens"]),
        ("Request throughput (req/s):", f"{metrics['request_throughput']:.2f}"),
        ("Output token throughput (tok/s):", f"{metrics['output_throughput']:.2f}"),
        ("Total token throughput (tok/s):", f"{metrics['total_token_throughput']:.2f}"),
        ("Peak concurrent requests:", metrics["peak_concurrency"]),
    ]
    if metrics.get("server_prefix_cache_hit_rate") is not None:
        rows.append(("Prefix cache hit rate (server, %):", f"{100 * metrics['server_prefix_cache_hit_rate']:.1f}"))
    if metrics.get("server_preemptions") is not None:
        rows.append(("Preemptions (server):", metrics["server_preemptions"]))
    lines = ["{s:{c}^50}".format(s=" Serving Benchmark Result ", c="=")]
    lines += [f"{label:<40} {value:<10}" for label, value in rows]
    for name, title in LATENCY_METRICS.items():
        short = name.upper()
        lines.append("{s:{c}^50}".format(s=title, c="-"))
        stats = ["mean", "median"] + [percentile_key(p) for p in percentiles]
        for stat in stats:
            label = f"{stat.capitalize() if stat in ('mean', 'median') else stat.upper()} {short} (ms):"
            lines.append(f"{label:<40} {metrics[f'{stat}_{name}_ms']:<10.2f}")
    lines.append("=" * 50)
    return "\n".join(lines)


def sweep_table(runs: list[dict[str, Any]], percentiles: tuple[float, ...]) -> str:
    """One Markdown row per rate, for benchmarks/RESULTS.md."""
    p = percentile_key(percentiles[-1])
    cols = ["mean_ttft_ms", f"{p}_ttft_ms", "mean_tpot_ms", f"{p}_tpot_ms", "mean_itl_ms", f"{p}_itl_ms",
            "mean_e2el_ms", f"{p}_e2el_ms"]
    head = ["rate (req/s)", "done/failed", "req/s", "out tok/s", "total tok/s"] + [
        c.replace("_ms", " (ms)").replace("_", " ") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [str(r["request_rate"]), f"{r['completed']}/{r['failed']}", f"{r['request_throughput']:.2f}",
                 f"{r['output_throughput']:.1f}", f"{r['total_token_throughput']:.1f}"]
        cells += [f"{r[c]:.1f}" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Counters of the server's Prometheus /metrics that tell whether a run measured what it meant to:
# prefix-cache hits mean prompts were already cached (an earlier run with the same --seed), and
# preemptions mean the KV cache was too small for the load. Matched by suffix: "pagedllm:..." and
# "vllm:..." alike.
SERVER_COUNTERS = ("prefix_cache_queries_total", "prefix_cache_hits_total", "num_preemptions_total")


def parse_server_counters(text: str) -> dict[str, float]:
    """Sum of each SERVER_COUNTERS sample over its label sets, from Prometheus text format."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        for counter in SERVER_COUNTERS:
            if name == counter or name.endswith(":" + counter):
                with contextlib.suppress(ValueError):
                    totals[counter] = totals.get(counter, 0.0) + float(value)
    return totals


def server_counter_metrics(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    """What the server counted during one run: prefix-cache hit rate (of prompt tokens looked up)
    and preemptions; None where the server does not export the counter."""
    def delta(name: str) -> float | None:
        if not before or not after or name not in before or name not in after:
            return None
        return after[name] - before[name]

    queries, hits = delta("prefix_cache_queries_total"), delta("prefix_cache_hits_total")
    preemptions = delta("num_preemptions_total")
    return {
        "server_prefix_cache_hit_rate": hits / queries if queries and hits is not None else None,
        "server_preemptions": int(preemptions) if preemptions is not None else None,
    }
