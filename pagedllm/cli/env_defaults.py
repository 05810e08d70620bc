"""Flags readable from the environment: `--max-num-seqs` <- PAGEDLLM_MAX_NUM_SEQS, and so on.

Precedence is the usual one: a flag on the command line beats the environment, which beats the
built-in default. Useful in containers, where the command is fixed and the settings are not.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping

from pagedllm import envs
from pagedllm.envs import env_name


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Replace each long option's default by its environment variable, when set."""
    environ = envs.environ() if environ is None else environ
    for action in parser._actions:  # argparse has no public iterator over its actions
        long_options = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
        if not long_options or action.dest == "help":
            continue
        raw = environ.get(env_name(long_options[0]))
        if raw is not None:
            action.default = _convert(action, raw)


def _convert(action: argparse.Action, raw: str) -> object:
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return envs.parse_bool(env_name(action.option_strings[0]), raw)
    convert = action.type
    assert not isinstance(convert, str)  # a type registered by name: pagedllm registers none
    if action.nargs in ("+", "*"):
        items = raw.split(",") if "," in raw else raw.split()
        return [convert(i) if convert else i for i in items]
    try:
        value = convert(raw) if convert else raw
    except (TypeError, ValueError) as e:
        raise ValueError(f"{env_name(action.option_strings[0])}={raw!r}: {e}") from e
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{env_name(action.option_strings[0])}={raw!r} is not one of "
                         f"{', '.join(map(str, action.choices))}.")
    return value
