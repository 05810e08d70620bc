"""Where each engine step's wall time goes, accumulated cheaply for benchmarks and logs."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepTimes:
    """Seconds spent per stage, summed over steps."""

    num_steps: int = 0
    schedule: float = 0.0
    execute: float = 0.0
    update: float = 0.0
    output: float = 0.0
    per_batch_size: dict[int, list[float]] = field(default_factory=dict)  # running reqs -> [sched+update s, steps]

    def record(self, num_running: int, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        self.num_steps += 1
        self.schedule += t1 - t0
        self.execute += t2 - t1
        self.update += t3 - t2
        self.output += t4 - t3
        acc = self.per_batch_size.setdefault(num_running, [0.0, 0])
        acc[0] += (t1 - t0) + (t3 - t2)
        acc[1] += 1

    def reset(self) -> None:
        """Every sum back to zero, in place: the engine and its core share this object."""
        vars(self).update(vars(StepTimes()))

    def summary(self) -> dict[str, float]:
        n = max(self.num_steps, 1)
        return {
            "steps": self.num_steps,
            "schedule_ms": 1e3 * self.schedule / n,
            "execute_ms": 1e3 * self.execute / n,
            "update_ms": 1e3 * self.update / n,
            "output_ms": 1e3 * self.output / n,
        }
