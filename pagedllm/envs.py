"""Every environment variable pagedllm reads, read here and nowhere else in the package.

* PAGEDLLM_<FIELD> for each KernelConfig field (PAGEDLLM_ATTENTION_BACKEND, PAGEDLLM_CPU_GEMM,
  PAGEDLLM_SKINNY_GEMM, ...): the default of that engine argument when the caller leaves it
  unset (EngineArgs). Values are checked here: a boolean is one of 1/0/true/false/yes/no/on/off,
  a choice one of the field's choices; anything else is a ValueError that names the variable and
  lists what is allowed.
* PAGEDLLM_<FLAG> for each flag of `pagedllm serve` (cli/env_defaults.py asks `environ()`).
* OPENAI_API_KEY: the serving benchmark's default client key.
* RAY_ADDRESS: Ray's own; when set, engines of several ranks run their workers on that Ray cluster
  by default (distributed_executor_backend="ray"), and the Ray executor attaches to it.
* TORCH_EXTENSIONS_DIR: torch's own variable for where extension builds go; the C++ CPU kernels
  build under it too (kernels/cpu/__init__.py), else under torch's default root.
* OMP_WAIT_POLICY, GOMP_SPINCOUNT: OpenMP's (libgomp's) own; unless one is set, importing pagedllm
  sets GOMP_SPINCOUNT (set_openmp_wait_policy), before torch loads libgomp.

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


def ray_address() -> str | None:
    """RAY_ADDRESS when set: the Ray cluster to run the workers of several ranks on."""
    return environ().get("RAY_ADDRESS") or None


def torch_extensions_dir() -> str | None:
    """TORCH_EXTENSIONS_DIR when set: the root the C++ CPU kernels build under."""
    return environ().get("TORCH_EXTENSIONS_DIR") or None


# How long an idle OpenMP thread spins before it sleeps, in libgomp's iterations (about 10-30 us
# here). libgomp's default, 300,000, keeps waiting threads on their cores for up to a few ms: on a
# machine whose cores other processes keep busy, the spinning threads take the cores the working
# ones need, and batch-1 decode of the default model went from 6.1 to 112 ms per token beside three
# busy processes (37.7 ms with this count, 33.8 with OMP_WAIT_POLICY=PASSIVE, which costs 3.4x when
# the machine is idle; this count costs 0-3% idle: benchmarks/RESULTS.md, 2026-12-07).
OPENMP_SPIN_COUNT = "10000"


def set_openmp_wait_policy(env: typing.MutableMapping[str, str] | None = None) -> None:
    """Set GOMP_SPINCOUNT to OPENMP_SPIN_COUNT unless the user chose a wait policy. libgomp reads it
    once, when it loads (with torch), so pagedllm/__init__.py calls this before anything imports
    torch; a program that imported torch first keeps libgomp's default."""
    target = os.environ if env is None else env
    if "OMP_WAIT_POLICY" not in target and "GOMP_SPINCOUNT" not in target:
        target["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
