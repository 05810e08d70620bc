"""One log line every few seconds: throughput, queue and cache use (vLLM's LoggingStatLogger shape)."""
from __future__ import annotations

import logging
import time

from pagedllm.metrics.iteration_stats import IterationStats
from pagedllm.outputs import SchedulerStats, SpecDecodingStats

logger = logging.getLogger("pagedllm.metrics")


class LoggingStatLogger:
    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last_log = time.monotonic()
        self._num_prompt_tokens = 0
        self._num_generation_tokens = 0
        self._last_queries = 0
        self._last_hits = 0
        self._was_idle = True
        self._last_spec = SpecDecodingStats()

    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats) -> None:
        self._num_prompt_tokens += iteration_stats.num_prompt_tokens
        self._num_generation_tokens += iteration_stats.num_generation_tokens
        now = time.monotonic()
        if now - self._last_log < self.interval_s:
            return
        self._log(scheduler_stats, now - self._last_log)
        self._last_log = now

    def _log(self, s: SchedulerStats, elapsed: float) -> None:
        idle = not (self._num_prompt_tokens or self._num_generation_tokens or s.num_running or s.num_waiting)
        if not (idle and self._was_idle):  # one line when going idle, then quiet
            queries = s.prefix_cache_queries - self._last_queries
            hits = s.prefix_cache_hits - self._last_hits
            logger.info(
                "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, Running: %d reqs, "
                "Waiting: %d reqs, KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
                self._num_prompt_tokens / elapsed, self._num_generation_tokens / elapsed, s.num_running,
                s.num_waiting, 100 * s.kv_cache_usage, 100 * hits / queries if queries else 0.0)
            if s.spec_decoding is not None:
                self._log_spec_decoding(s.spec_decoding, elapsed)
        self._was_idle = idle
        self._num_prompt_tokens = self._num_generation_tokens = 0
        self._last_queries, self._last_hits = s.prefix_cache_queries, s.prefix_cache_hits

    def _log_spec_decoding(self, totals: SpecDecodingStats, elapsed: float) -> None:
        """vLLM's line: the interval's acceptance, from the differences of the running totals."""
        interval = totals.since(self._last_spec)
        self._last_spec = totals.copy()
        if not interval.num_drafts:
            return
        logger.info("SpecDecoding metrics: Mean acceptance length: %.2f, Accepted throughput: %.2f tokens/s, "
                    "Drafted throughput: %.2f tokens/s, Accepted: %d tokens, Drafted: %d tokens, Per-position "
                    "acceptance rate: %s, Avg Draft acceptance rate: %.1f%%", interval.mean_acceptance_length,
                    interval.num_accepted_tokens / elapsed, interval.num_draft_tokens / elapsed,
                    interval.num_accepted_tokens, interval.num_draft_tokens,
                    ", ".join(f"{r:.3f}" for r in interval.per_position_acceptance()),
                    100 * interval.acceptance_rate)
