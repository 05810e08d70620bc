"""Prometheus metrics, named like vLLM's (`vllm:` -> `pagedllm:`), and the /metrics route.

Counters that the engine core keeps as running totals (prefix-cache queries/hits, preemptions) are
turned into increments here, so a scrape sees monotonic counters whatever the step rate.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pagedllm.metrics.iteration_stats import IterationStats
from pagedllm.outputs import SchedulerStats, SpecDecodingStats

_LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
_TOKEN_LATENCY_BUCKETS = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                          0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]


class PrometheusStatLogger:
    """Owns its own registry, so several servers (tests) in one process don't collide."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"model_name": model_name}
        self._gauges = {
            "num_running": self._gauge("num_requests_running", "Requests running in the engine.", labels),
            "num_waiting": self._gauge("num_requests_waiting", "Requests waiting to be scheduled.", labels),
            "kv_cache_usage": self._gauge("kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0-1).",
                                          labels),
            "num_blocks": self._gauge("kv_cache_num_blocks", "KV-cache blocks in total.", labels),
            "num_free_blocks": self._gauge("kv_cache_num_free_blocks",
                                           "KV-cache blocks free or cached without references.", labels),
        }
        self._totals = {  # SchedulerStats field -> counter fed with increments of a running total
            "prefix_cache_queries": self._counter("prefix_cache_queries", "Prompt tokens looked up in the "
                                                  "prefix cache.", labels),
            "prefix_cache_hits": self._counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                               labels),
            "num_preemptions": self._counter("num_preemptions", "Requests preempted (recomputed later).", labels),
        }
        self._last_totals = {name: 0 for name in self._totals}
        self.prompt_tokens = self._counter("prompt_tokens", "Prompt tokens of requests served.", labels)
        self.generation_tokens = self._counter("generation_tokens", "Tokens generated.", labels)
        self.request_success = Counter("pagedllm:request_success", "Finished requests by finish reason.",
                                       ["model_name", "finished_reason"], registry=self.registry)
        self._model_name = model_name
        hist = self._histogram
        self.ttft = hist("time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS, labels)
        self.tpot = hist("time_per_output_token_seconds", "Mean time per output token of a request.",
                         _TOKEN_LATENCY_BUCKETS, labels)
        self.itl = hist("inter_token_latency_seconds", "Time between consecutive outputs of a request.",
                        _TOKEN_LATENCY_BUCKETS, labels)
        self.e2e = hist("e2e_request_latency_seconds", "Arrival to finish.", _LATENCY_BUCKETS, labels)
        self.queue = hist("request_queue_time_seconds", "Arrival to first scheduled.", _LATENCY_BUCKETS, labels)
        self._spec = _SpecDecodingCounters(self.registry, model_name)

    def _gauge(self, name: str, doc: str, labels: dict[str, str]) -> Any:
        return Gauge(f"pagedllm:{name}", doc, list(labels), registry=self.registry).labels(**labels)

    def _counter(self, name: str, doc: str, labels: dict[str, str]) -> Any:
        return Counter(f"pagedllm:{name}", doc, list(labels), registry=self.registry).labels(**labels)

    def _histogram(self, name: str, doc: str, buckets: list[float], labels: dict[str, str]) -> Any:
        return Histogram(f"pagedllm:{name}", doc, list(labels), buckets=buckets,
                         registry=self.registry).labels(**labels)

    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats) -> None:
        for field, gauge in self._gauges.items():
            gauge.set(getattr(scheduler_stats, field))
        for field, counter in self._totals.items():
            total = getattr(scheduler_stats, field)
            if total > self._last_totals[field]:
                counter.inc(total - self._last_totals[field])
            self._last_totals[field] = total
        if scheduler_stats.spec_decoding is not None:
            self._spec.record(scheduler_stats.spec_decoding)
        self.prompt_tokens.inc(iteration_stats.num_prompt_tokens)
        self.generation_tokens.inc(iteration_stats.num_generation_tokens)
        for ttft in iteration_stats.time_to_first_tokens:
            self.ttft.observe(ttft)
        for itl in iteration_stats.inter_token_latencies:
            self.itl.observe(itl)
        for done in iteration_stats.finished:
            self.request_success.labels(model_name=self._model_name, finished_reason=done.finish_reason).inc()
            self.e2e.observe(done.e2e_latency)
            self.queue.observe(done.queue_time)
            if done.num_generation_tokens > 1:
                self.tpot.observe(done.time_per_output_token)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _SpecDecodingCounters:
    """vLLM's spec_decode_* counters, fed with the increments of the core's running totals."""

    def __init__(self, registry: CollectorRegistry, model_name: str) -> None:
        def counter(name: str, doc: str) -> Any:
            return Counter(f"pagedllm:spec_decode_{name}", doc, ["model_name"], registry=registry).labels(model_name)

        self._counters = {
            "num_drafts": counter("num_drafts", "Drafts checked (one request's proposal in one step)."),
            "num_draft_tokens": counter("num_draft_tokens", "Draft tokens checked."),
            "num_accepted_tokens": counter("num_accepted_tokens", "Draft tokens accepted."),
        }
        self._per_pos = Counter("pagedllm:spec_decode_num_accepted_tokens_per_pos",
                                "Draft tokens accepted at each position of the draft.", ["model_name", "position"],
                                registry=registry)
        self._model_name = model_name
        self._last = SpecDecodingStats()

    def record(self, stats: SpecDecodingStats) -> None:
        interval = stats.since(self._last)
        for field, counter in self._counters.items():
            if getattr(interval, field) > 0:
                counter.inc(getattr(interval, field))
        for pos, n in enumerate(interval.num_accepted_tokens_per_pos):
            if n > 0:
                self._per_pos.labels(model_name=self._model_name, position=str(pos)).inc(n)
        self._last = stats.copy()
