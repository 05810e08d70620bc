"""The engine's metrics as values, for the offline API (`LLM.get_metrics()`, vLLM's shape).

Names are the /metrics ones (prometheus.py): vLLM's with `pagedllm:` for `vllm:`. Counters are
totals since the engine started.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm.outputs import SchedulerStats


@dataclass(frozen=True)
class Metric:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Counter(Metric):
    value: int = 0


@dataclass(frozen=True)
class Gauge(Metric):
    value: float = 0.0


@dataclass(frozen=True)
class Vector(Metric):
    """A counter per position (e.g. accepted draft tokens at each position of the draft)."""

    values: list[int] = field(default_factory=list)


def metrics_from_stats(s: SchedulerStats) -> list[Metric]:
    metrics: list[Metric] = [
        Gauge("pagedllm:num_requests_running", value=s.num_running),
        Gauge("pagedllm:num_requests_waiting", value=s.num_waiting),
        Gauge("pagedllm:kv_cache_usage_perc", value=s.kv_cache_usage),
        Counter("pagedllm:prefix_cache_queries", value=s.prefix_cache_queries),
        Counter("pagedllm:prefix_cache_hits", value=s.prefix_cache_hits),
        Counter("pagedllm:num_preemptions", value=s.num_preemptions),
    ]
    spec = s.spec_decoding
    if spec is not None:
        metrics += [
            Counter("pagedllm:spec_decode_num_drafts", value=spec.num_drafts),
            Counter("pagedllm:spec_decode_num_draft_tokens", value=spec.num_draft_tokens),
            Counter("pagedllm:spec_decode_num_accepted_tokens", value=spec.num_accepted_tokens),
            Vector("pagedllm:spec_decode_num_accepted_tokens_per_pos", values=list(spec.num_accepted_tokens_per_pos)),
        ]
    return metrics
