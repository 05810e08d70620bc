"""vLLM's engine arguments that pagedllm accepts for drop-in use, and which of their values.

Scripts written for vLLM pass arguments pagedllm has no use for, mostly at their default or a
value that changes nothing here (`data_parallel_size=1`, `trust_remote_code=False`,
`swap_space=4`). Each is a field of `VllmCompatArgs` (a base of `EngineArgs`, so `LLM(...)`,
`EngineArgs(...)` and the CLI flags all take them) whose metadata holds its rule: the values that
are accepted, and why the others are not. `check_vllm_args` applies the table: an unsupported value
is a ValueError naming the argument, before any model is loaded. Nothing else reads these fields.

A row leaves this table when its argument becomes real (as `quantization` did): it then moves to
EngineArgs with its own validation.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[Any], bool]
    why: str  # what pagedllm does instead; said when a value is refused
    never: bool = False  # refused for good ("not supported"), not just for now ("not supported yet")

    def message(self, name: str, value: Any) -> str:
        verdict = "is not supported" if self.never else "is not supported yet"
        return f"{name}={value!r} {verdict}: {self.why}."


def _one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: any(v == ok for ok in values)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _arg(default: Any, accepts: Callable[[Any], bool], why: str, never: bool = False) -> Any:
    return field(default=default, metadata={"rule": Rule(accepts, why, never)})


@dataclass(kw_only=True)
class VllmCompatArgs:
    """vLLM engine arguments accepted at their default or a no-op value (the module docstring)."""

    trust_remote_code: bool = _arg(False, _one_of(False), "pagedllm never runs code from a model repository; it "
                                   "loads the architectures it implements itself", never=True)
    data_parallel_size: int = _arg(1, _one_of(1), "pagedllm runs one copy of the model per engine; start one "
                                   "server per device (or group of devices)")
    disable_custom_all_reduce: bool = _arg(False, _is_bool, "it is a boolean", never=True)
    tokenizer_mode: str = _arg("auto", _one_of("auto", "hf"), "pagedllm uses the Hugging Face tokenizer")
    revision: str | None = _arg(None, _one_of(None, "main"), "Hub models come from their main branch")
    tokenizer_revision: str | None = _arg(None, _one_of(None, "main"), "Hub models come from their main branch")
    download_dir: str | None = _arg(None, _one_of(None), "Hub models go to the Hugging Face cache (HF_HUB_CACHE)")
    swap_space: float = _arg(4, _non_negative, "it is the GiB of CPU swap space, a number >= 0 (pagedllm "
                             "recomputes preempted requests instead of swapping them)", never=True)
    cpu_offload_gb: float = _arg(0, _one_of(0), "the weights stay on the device")
    max_seq_len_to_capture: int = _arg(8192, _positive_int, "it is a positive context length (pagedllm's "
                                       "CUDA graphs serve every context length)", never=True)
    disable_log_stats: bool = _arg(False, _is_bool, "it is a boolean", never=True)
    enable_chunked_prefill: bool | None = _arg(None, _one_of(None, True), "pagedllm always chunks long prompts")
    enable_lora: bool = _arg(False, _one_of(False), "LoRA adapters are not implemented")
    task: str = _arg("auto", _one_of("auto", "generate"), "pagedllm generates text")
    disable_sliding_window: bool = _arg(False, _one_of(False), "sliding-window attention is the model's")


VLLM_COMPAT_ARGS = tuple(f.name for f in dataclasses.fields(VllmCompatArgs))


def check_vllm_args(args: VllmCompatArgs) -> None:
    """Raise ValueError for the first argument whose value pagedllm does not support."""
    for f in dataclasses.fields(VllmCompatArgs):
        rule: Rule = f.metadata["rule"]
        value = getattr(args, f.name)
        if not rule.accepts(value):
            raise ValueError(rule.message(f.name, value))


def add_vllm_compat_args(parser: argparse.ArgumentParser) -> None:
    """The same arguments as flags (`--tensor-parallel-size 1`, `--trust-remote-code`), default None
    (not given); a flag the parser already has (serve's --disable-log-stats) is left to it."""
    import typing

    hints = typing.get_type_hints(VllmCompatArgs)
    # Out of --help: there are many and they change nothing (the README lists them).
    for f in dataclasses.fields(VllmCompatArgs):
        flag = "--" + f.name.replace("_", "-")
        if flag in parser._option_string_actions:  # argparse has no public lookup by option string
            continue
        hint = hints[f.name]
        if hint is bool or hint == bool | None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
        elif hint is int:
            parser.add_argument(flag, type=int, default=None, help=argparse.SUPPRESS)
        elif hint is float:
            parser.add_argument(flag, type=float, default=None, help=argparse.SUPPRESS)
        elif hint == str | None or hint is str:
            parser.add_argument(flag, default=None, help=argparse.SUPPRESS)


def vllm_compat_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The compatibility flags that were given, as engine arguments."""
    return {name: getattr(args, name) for name in VLLM_COMPAT_ARGS if getattr(args, name, None) is not None}
