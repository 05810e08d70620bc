"""Stop strings on incrementally growing text: finding them, and what streaming must hold back.

    output_text:  ... already searched ... | last len(stop)-1 chars | new chars |
                                           ^ search starts here: a stop string straddling the
                                             previous end is found, older text is not re-read
"""
from __future__ import annotations


def find_stop_string(output_text: str, new_char_count: int, stop: list[str],
                     include_in_output: bool) -> tuple[str, int] | None:
    """The first of `stop` found in the last `new_char_count` chars (or straddling their start).

    Returns (stop string, length to truncate output_text to), the length being -1 when nothing is
    to be cut; None when no stop string is found. Same semantics as vLLM's `check_stop_strings`.
    """
    if not new_char_count or not stop:
        return None
    for stop_str in stop:
        start = max(0, len(output_text) - new_char_count - len(stop_str) + 1)
        index = output_text.find(stop_str, start)
        if index == -1:
            continue
        if not include_in_output:
            return stop_str, index
        end = index + len(stop_str)
        return stop_str, (-1 if end >= len(output_text) else end)
    return None


def partial_stop_length(text: str, stop: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string.

    Streaming holds these chars back: the next tokens may complete the stop string, which must
    then never have been sent. Anything before them can be sent, since no stop string can start
    there any more.
    """
    longest = 0
    for stop_str in stop:
        for length in range(min(len(stop_str) - 1, len(text)), longest, -1):
            if text.endswith(stop_str[:length]):
                longest = length
                break
    return longest
