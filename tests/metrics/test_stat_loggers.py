"""Prometheus counters follow the core's running totals; histograms get the iteration's latencies."""
from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families

from pagedllm.metrics.iteration_stats import IterationStats
from pagedllm.metrics.log import LoggingStatLogger
from pagedllm.metrics.prometheus import PrometheusStatLogger
from pagedllm.outputs import RequestMetrics, SchedulerStats


def _samples(logger: PrometheusStatLogger) -> dict[str, float]:
    body, _ = logger.render()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = s.name + ("" if "finished_reason" not in s.labels else f"[{s.labels['finished_reason']}]")
            out[key] = out.get(key, 0.0) + s.value
    return out


def test_prometheus_counters_from_totals_and_histograms() -> None:
    prom = PrometheusStatLogger("m")
    it = IterationStats()
    metrics = RequestMetrics(arrival_time=10.0, first_scheduled_time=10.5)
    it.on_tokens(metrics, 1, num_prompt_tokens=7, now=11.0)
    metrics.first_token_time = metrics.last_token_time = 11.0
    it.on_tokens(metrics, 1, num_prompt_tokens=7, now=11.25)
    metrics.last_token_time = 11.25
    it.on_finished(metrics, "length", 7, 2, now=11.25)
    prom.record(SchedulerStats(num_running=3, num_waiting=1, kv_cache_usage=0.5, num_blocks=8, num_free_blocks=4,
                               prefix_cache_queries=100, prefix_cache_hits=40, num_preemptions=2), it)
    prom.record(SchedulerStats(prefix_cache_queries=150, prefix_cache_hits=40, num_preemptions=2), IterationStats())
    s = _samples(prom)
    assert s["pagedllm:prefix_cache_queries_total"] == 150  # totals, not the sum of totals
    assert s["pagedllm:prefix_cache_hits_total"] == 40
    assert s["pagedllm:num_preemptions_total"] == 2
    assert s["pagedllm:num_requests_running"] == 0  # gauges show the latest stats
    assert s["pagedllm:prompt_tokens_total"] == 7 and s["pagedllm:generation_tokens_total"] == 2
    assert s["pagedllm:time_to_first_token_seconds_sum"] == 1.0
    assert s["pagedllm:inter_token_latency_seconds_sum"] == 0.25
    assert s["pagedllm:time_per_output_token_seconds_sum"] == 0.25
    assert s["pagedllm:request_queue_time_seconds_sum"] == 0.5
    assert s["pagedllm:e2e_request_latency_seconds_sum"] == 1.25
    assert s["pagedllm:request_success_total[length]"] == 1


def test_log_line_every_interval(caplog) -> None:
    log = LoggingStatLogger(interval_s=0.0)
    it = IterationStats(num_prompt_tokens=10, num_generation_tokens=5)
    with caplog.at_level(logging.INFO, logger="pagedllm.metrics"):
        log.record(SchedulerStats(num_running=2, kv_cache_usage=0.125, prefix_cache_queries=10,
                                  prefix_cache_hits=5), it)
    [record] = caplog.records
    assert "Running: 2 reqs" in record.getMessage() and "KV cache usage: 12.5%" in record.getMessage()
    assert "Prefix cache hit rate: 50.0%" in record.getMessage()
