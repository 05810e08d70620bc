"""Flags readable from the environment: `--max-num-seqs` <- PAGEDLLM_MAX_NUM_SEQS, and so on.

Precedence is the usual one: a flag on the command line beats the environment, which beats the
built-in default. Useful in containers, where the command is fixed and the settings are not.
"""
from __future__ import annotations

import argparse
import os

ENV_PREFIX = "PAGEDLLM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
    """Replace each long option's default by its environment variable, when set."""
    environ = dict(os.environ) if environ is None else environ
    for action in parser._actions:  # argparse has no public iterator over its actions
        long_options = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
        if not long_options or action.dest == "help":
            continue
        raw = environ.get(env_name(long_options[0]))
        if raw is not None:
            action.default = _convert(action, raw)


def _convert(action: argparse.Action, raw: str) -> object:
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"{env_name(action.option_strings[0])}={raw!r} is not a boolean (use true/false).")
    if action.nargs in ("+", "*"):
        items = raw.split(",") if "," in raw else raw.split()
        return [action.type(i) if action.type else i for i in items]
    try:
        return action.type(raw) if action.type else raw
    except (TypeError, ValueError) as e:
        raise ValueError(f"{env_name(action.option_strings[0])}={raw!r}: {e}") from e
