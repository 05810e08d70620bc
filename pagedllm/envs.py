"""Every environment variable pagedllm reads, read here and nowhere else in the package.

* PAGEDLLM_<FIELD> for each KernelConfig field (PAGEDLLM_ATTENTION_BACKEND, PAGEDLLM_CPU_GEMM,
  PAGEDLLM_SKINNY_GEMM, ...): the default of that engine argument when the caller leaves it
  unset (EngineArgs). Values are checked here: a boolean is one of 1/0/true/false/yes/no/on/off,
  a choice one of the field's choices; anything else is a ValueError that names the variable and
  lists what is allowed.
* PAGEDLLM_<FLAG> for each flag of `pagedllm serve` (cli/env_defaults.py asks `environ()`).
* OPENAI_API_KEY: the serving benchmark's default client key.
* TORCH_EXTENSIONS_DIR: torch's own variable for where extension builds go; the C++ CPU kernels
  build under it too (kernels/cpu/__init__.py), else under torch's default root.

Nothing below the engine reads the environment: layers, kernels and the worker get typed
configuration.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

PREFIX = "PAGEDLLM_"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
# Switches that were renamed when they became KernelConfig fields.
_RENAMED = {"PAGEDLLM_TRITON_GEMV": "PAGEDLLM_SKINNY_GEMM (auto, on, off)",
            "PAGEDLLM_GEMV_PDL": "PAGEDLLM_GEMM_PDL"}


def environ() -> Mapping[str, str]:
    """The process environment (the one place it is read)."""
    return os.environ


def env_name(option: str) -> str:
    """`--max-num-seqs` or `max_num_seqs` -> PAGEDLLM_MAX_NUM_SEQS."""
    return PREFIX + option.lstrip("-").replace("-", "_").upper()


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use one of {', '.join(sorted(TRUE | FALSE))}.")


def kernel_config_defaults(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """KernelConfig fields set by PAGEDLLM_<FIELD> variables, parsed and checked."""
    from pagedllm.config import KernelConfig

    env = environ() if env is None else env
    for old, new in _RENAMED.items():
        if old in env:
            raise ValueError(f"{old} is no longer read; set {new} instead.")
    hints = typing.get_type_hints(KernelConfig)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(KernelConfig):
        name = env_name(f.name)
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        values[f.name] = _parse(name, raw, hints[f.name], f.metadata.get("choices"))
    try:
        KernelConfig(**values)
    except ValueError as e:
        raise ValueError(f"From the environment ({', '.join(env_name(k) for k in values)}): {e}") from e
    return values


def _parse(name: str, raw: str, hint: Any, choices: tuple[str, ...] | None) -> Any:
    kinds = set(typing.get_args(hint)) - {type(None)} if isinstance(hint, types.UnionType) else {hint}
    if bool in kinds:
        return parse_bool(name, raw)
    if int in kinds:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an integer.") from None
    value = raw.strip()
    if choices is not None and value not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}.")
    return value


def openai_api_key() -> str | None:
    return environ().get("OPENAI_API_KEY")


def torch_extensions_dir() -> str | None:
    """TORCH_EXTENSIONS_DIR when set: the root the C++ CPU kernels build under."""
    return environ().get("TORCH_EXTENSIONS_DIR") or None
