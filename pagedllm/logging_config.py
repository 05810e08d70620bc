"""How pagedllm's processes log: pagedllm's own loggers at the chosen level (INFO unless told), so a
first start says what it is doing; other libraries' loggers at WARNING (or the chosen level when it
is stricter), so their chatter stays out."""
from __future__ import annotations

import logging

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
DEFAULT_LOG_LEVEL = "INFO"
CLI_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = DEFAULT_LOG_LEVEL, fmt: str = CLI_FORMAT) -> None:
    """Set the `pagedllm` logger to `level` and the root logger (everything else) to WARNING or
    stricter; give the root logger a stderr handler if it has none."""
    ours = logging.getLogger("pagedllm")
    ours.setLevel(level.upper() if isinstance(level, str) else level)
    root_level = max(logging.WARNING, ours.level)
    logging.basicConfig(level=root_level, format=fmt)  # a no-op where handlers exist (embedding apps)
    logging.getLogger().setLevel(root_level)
