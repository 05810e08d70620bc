"""The live count of sequences waiting for a slot in the engine core, kept in the server process.

Admission (`--max-waiting-requests`) compares this count with its bound. The engine core runs in
another process and reports its state (`SchedulerStats`) once per step, with its outputs; between
two reports the server keeps sending requests. Counting every request sent since the last report as
waiting refuses a burst on an idle server, so the count follows what the core's next step will do:

    in transit = sequences sent - sequences the core had received at its last report
    free       = max_num_seqs - running - waiting              (slots free at that report)
    waiting    = waiting at that report + max(0, in transit - free)

The sequences the core reported waiting really wait: they were there when it last scheduled, and
were held back by slots, the KV cache or the token budget. Sequences in transit take the free slots
first, in the order sent, and only the rest wait. The count is exact at each report; between
reports it errs towards more waiting (sequences that finish free their slots only at the next report),
except that sequences in transit which the KV cache, not a slot, will hold back count one step late.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm.outputs import SchedulerStats


@dataclass
class WaitingCount:
    max_num_seqs: int
    num_sent: int = 0  # sequences (a request's n children each) sent to the core since it started
    stats: SchedulerStats = field(default_factory=SchedulerStats)  # the core's last report

    def on_sent(self, num_sequences: int) -> None:
        self.num_sent += num_sequences

    def on_stats(self, stats: SchedulerStats) -> None:
        self.stats = stats

    def reset(self) -> None:
        """A new engine core starts from nothing."""
        self.num_sent = 0
        self.stats = SchedulerStats()

    def num_waiting(self, num_new: int = 0) -> int:
        """Sequences that wait for a slot now, or would if `num_new` more were sent now."""
        stats = self.stats
        in_transit = max(0, self.num_sent - stats.num_requests_received) + num_new
        free = max(0, self.max_num_seqs - stats.num_running - stats.num_waiting)
        return stats.num_waiting + max(0, in_transit - free)
