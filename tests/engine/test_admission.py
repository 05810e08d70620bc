"""The live count of sequences waiting for a slot that admission (--max-waiting-requests) compares."""
from __future__ import annotations

from pagedllm.engine.admission import WaitingCount
from pagedllm.outputs import SchedulerStats


def test_sequences_in_transit_take_free_slots_first():
    count = WaitingCount(max_num_seqs=256)
    assert count.num_waiting() == 0 and count.num_waiting(256) == 0 and count.num_waiting(300) == 44
    count.on_sent(100)  # a burst, before the core has said anything
    assert count.num_waiting() == 0 and count.num_waiting(156) == 0 and count.num_waiting(157) == 1
    count.on_sent(200)
    assert count.num_waiting() == 44


def test_a_report_replaces_what_was_in_transit():
    count = WaitingCount(max_num_seqs=8)
    count.on_sent(12)
    assert count.num_waiting() == 4
    count.on_stats(SchedulerStats(num_running=8, num_waiting=4, num_requests_received=12))
    assert count.num_waiting() == 4 and count.num_waiting(1) == 5
    count.on_stats(SchedulerStats(num_running=3, num_waiting=0, num_requests_received=12))  # some finished
    assert count.num_waiting() == 0 and count.num_waiting(5) == 0 and count.num_waiting(6) == 1


def test_the_cores_waiting_sequences_wait_even_with_free_slots():
    # Held back by the KV cache or the token budget, not by slots: they still wait, and new ones queue behind.
    count = WaitingCount(max_num_seqs=256)
    count.on_stats(SchedulerStats(num_running=10, num_waiting=20, num_requests_received=30))
    assert count.num_waiting() == 20 and count.num_waiting(226) == 20 and count.num_waiting(227) == 21


def test_sent_but_unreported_sequences_count_after_a_stale_report():
    count = WaitingCount(max_num_seqs=4)
    count.on_sent(3)
    count.on_stats(SchedulerStats(num_running=2, num_requests_received=2))  # the third is still on its way
    count.on_sent(2)
    assert count.num_waiting() == 1  # 2 running, 3 in transit for 2 free slots


def test_reset_after_a_restart():
    count = WaitingCount(max_num_seqs=4)
    count.on_sent(10)
    count.reset()
    assert count.num_waiting() == 0 and count.num_waiting(5) == 1
