"""Per-request latency facts gathered while outputs are processed, drained by the metrics loggers."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm.outputs import RequestMetrics


@dataclass(slots=True)
class FinishedRequestStats:
    finish_reason: str
    e2e_latency: float  # arrival -> last output
    queue_time: float  # arrival -> first scheduled
    time_per_output_token: float  # (last token - first token) / (generated - 1); 0 for one token
    num_prompt_tokens: int
    num_generation_tokens: int


@dataclass
class IterationStats:
    """What happened since the last drain (one or more engine steps)."""

    num_prompt_tokens: int = 0  # prompts of requests that got their first token
    num_generation_tokens: int = 0
    time_to_first_tokens: list[float] = field(default_factory=list)
    inter_token_latencies: list[float] = field(default_factory=list)
    finished: list[FinishedRequestStats] = field(default_factory=list)

    def on_tokens(self, metrics: RequestMetrics, num_new_tokens: int, num_prompt_tokens: int, now: float) -> None:
        """Record a request's new tokens (call before metrics.last_token_time is moved to now)."""
        self.num_generation_tokens += num_new_tokens
        if metrics.first_token_time is None:
            self.num_prompt_tokens += num_prompt_tokens
            self.time_to_first_tokens.append(now - metrics.arrival_time)
        elif metrics.last_token_time is not None:
            self.inter_token_latencies.append(now - metrics.last_token_time)

    def on_finished(self, metrics: RequestMetrics, finish_reason: str, num_prompt_tokens: int,
                    num_generation_tokens: int, now: float) -> None:
        first, last = metrics.first_token_time, metrics.last_token_time
        tpot = (last - first) / (num_generation_tokens - 1) if (
            first is not None and last is not None and num_generation_tokens > 1) else 0.0
        scheduled = metrics.first_scheduled_time
        self.finished.append(FinishedRequestStats(
            finish_reason=finish_reason,
            e2e_latency=now - metrics.arrival_time,
            queue_time=(scheduled - metrics.arrival_time) if scheduled is not None else 0.0,
            time_per_output_token=tpot,
            num_prompt_tokens=num_prompt_tokens,
            num_generation_tokens=num_generation_tokens,
        ))
