"""The serving benchmark's arithmetic on synthetic timings."""
from __future__ import annotations

import pytest

from pagedllm.bench.serve_metrics import (RequestResult, calculate_metrics, format_table, latency_stats, parse_server_counters,
                                          peak_concurrency, percentile_key, server_counter_metrics, tpot)


def _ok(prompt_len: int, output_len: int, ttft: float, itl: list[float], latency: float, start: float = 0.0) -> RequestResult:
    return RequestResult(prompt_len, True, output_len, ttft, itl, latency, start)


def test_tpot_excludes_first_token_and_needs_two_tokens() -> None:
    assert tpot(_ok(10, 5, ttft=0.2, itl=[], latency=1.0)) == pytest.approx(0.8 / 4)
    assert tpot(_ok(10, 1, ttft=0.2, itl=[], latency=0.2)) is None
    assert tpot(RequestResult(10, False, 5, 0.2, [], 1.0)) is None


def test_latency_stats_in_ms_with_linear_percentiles() -> None:
    stats = latency_stats([0.001 * v for v in range(1, 101)], [50, 90, 99, 99.9])  # 1..100 ms
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["median"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["p99.9"] == pytest.approx(99.901)
    assert latency_stats([], [99]) == {"mean": 0.0, "median": 0.0, "std": 0.0, "p99": 0.0}
    assert percentile_key(99) == "p99" and percentile_key(99.0) == "p99" and percentile_key(99.5) == "p99.5"


def test_calculate_metrics_counts_only_successes_and_pools_itl() -> None:
    results = [
        _ok(100, 4, ttft=0.1, itl=[0.02, 0.03, 0.04], latency=0.19, start=0.0),
        _ok(50, 2, ttft=0.3, itl=[0.1], latency=0.4, start=0.5),
        RequestResult(70, False, 0, 0.0, [], 0.05, 0.6, "HTTP 500: boom"),
    ]
    m = calculate_metrics(results, duration_s=2.0, percentiles=[50, 99])
    assert (m["completed"], m["failed"]) == (2, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (150, 6)
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(3.0)
    assert m["total_token_throughput"] == pytest.approx(78.0)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    # TPOT: (0.19-0.1)/3 = 30 ms and (0.4-0.3)/1 = 100 ms.
    assert m["mean_tpot_ms"] == pytest.approx(65.0)
    # ITL pooled over requests: 20, 30, 40, 100 ms.
    assert m["mean_itl_ms"] == pytest.approx(47.5)
    assert m["median_itl_ms"] == pytest.approx(35.0)
    assert m["p99_itl_ms"] == pytest.approx(40 + 0.97 * 60)
    assert m["mean_e2el_ms"] == pytest.approx(295.0)
    assert m["p50_e2el_ms"] == pytest.approx(295.0)
    assert m["peak_concurrency"] == 2  # the failed request overlaps the second one


def test_calculate_metrics_rejects_nonpositive_duration() -> None:
    with pytest.raises(ValueError):
        calculate_metrics([], 0.0, [99])


def test_peak_concurrency_counts_overlaps_not_touching_ends() -> None:
    def r(start: float, latency: float) -> RequestResult:
        return RequestResult(1, True, 1, 0.0, [], latency, start)

    assert peak_concurrency([r(0, 1), r(1, 1), r(2, 1)]) == 1  # back to back
    assert peak_concurrency([r(0, 3), r(1, 1), r(1.5, 1), r(5, 1)]) == 3
    assert peak_concurrency([]) == 0


def test_format_table_has_vllm_rows_and_asked_percentiles() -> None:
    m = calculate_metrics([_ok(10, 3, 0.1, [0.05, 0.05], 0.2)], 1.0, [90, 99])
    table = format_table(m, [90, 99])
    for row in ["Successful requests:", "Failed requests:", "Request throughput (req/s):",
                "Output token throughput (tok/s):", "Total token throughput (tok/s):", "Mean TTFT (ms):",
                "Median TPOT (ms):", "P90 ITL (ms):", "P99 E2EL (ms):"]:
        assert row in table, row
    assert "Mean TTFT (ms):                          100.00" in table


def test_server_counters_are_parsed_by_suffix_and_summed_over_labels() -> None:
    text = """# HELP vllm:prefix_cache_hits_total hits
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{model_name="a",engine="0"} 10.0
vllm:prefix_cache_hits_total{model_name="a",engine="1"} 5.0
vllm:prefix_cache_hits_created{model_name="a",engine="0"} 1.7e9
vllm:prefix_cache_queries_total{model_name="a"} 60.0
pagedllm:num_preemptions_total 3.0
other_prefix_cache_hits_total 99
"""
    counters = parse_server_counters(text)
    assert counters == {"prefix_cache_hits_total": 15.0, "prefix_cache_queries_total": 60.0,
                        "num_preemptions_total": 3.0}
    after = {"prefix_cache_hits_total": 45.0, "prefix_cache_queries_total": 160.0, "num_preemptions_total": 5.0}
    assert server_counter_metrics(counters, after) == {"server_prefix_cache_hit_rate": 0.3, "server_preemptions": 2}
    assert server_counter_metrics(None, after) == {"server_prefix_cache_hit_rate": None, "server_preemptions": None}
    assert server_counter_metrics({}, {}) == {"server_prefix_cache_hit_rate": None, "server_preemptions": None}
