"""Text that may be the start of a marker is held back until the text decides it (tool-call
parsers here, and the reasoning parsers' end-of-thinking tag)."""
from __future__ import annotations


def partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker` (0 if none)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def held_text(text: str, marker: str, final: bool) -> str:
    """`text` without an end that may still become `marker` (all of it once the text is final)."""
    return text if final else text[: len(text) - partial_suffix(text, marker)]


def undecided_start(text: str, markers: tuple[str, ...]) -> bool:
    """Whether `text` (leading whitespace aside) is empty or may still become one of `markers`."""
    rest = text.lstrip()
    return any(marker.startswith(rest) for marker in markers)
