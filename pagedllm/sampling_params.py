"""User-facing sampling parameters, named and validated like vLLM's `SamplingParams`."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

_SAMPLING_EPS = 1e-5


class RequestOutputKind(IntEnum):
    CUMULATIVE = 0  # every output carries all text so far
    DELTA = 1  # every output carries only what is new
    FINAL_ONLY = 2  # only the finished output is returned


@dataclass
class StructuredOutputsParams:
    """Constrain a request's output (vLLM's shape): exactly one of a JSON schema (`json`, as a dict
    or its JSON text), any JSON object (`json_object=True`), a regular expression, one of a list of
    strings (`choice`) or an EBNF grammar (xgrammar's dialect, GBNF-like). Each sampled token is one
    the constraint allows; the request stops when the constraint is complete."""

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    # JSON: no whitespace between tokens of the structure (vLLM's flag; it also keeps small models
    # from padding their output with endless spaces)
    disable_any_whitespace: bool = False

    def __post_init__(self) -> None:
        given = [name for name in ("json", "regex", "choice", "grammar", "json_object")
                 if getattr(self, name) not in (None, False)]
        _check(len(given) == 1, "structured_outputs needs exactly one of json, regex, choice, grammar and "
               f"json_object, got {given or 'none'}.")
        if self.choice is not None:
            _check(isinstance(self.choice, list) and len(self.choice) > 0
                   and all(isinstance(c, str) and c for c in self.choice),
                   "structured_outputs.choice must be a non-empty list of non-empty strings.")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, str) and value != ""),
                   f"structured_outputs.{name} must be a non-empty string.")

    @property
    def kind(self) -> str:
        """Which constraint: json, json_object, regex, choice or grammar."""
        for name in ("json", "regex", "choice", "grammar"):
            if getattr(self, name) is not None:
                return name
        return "json_object"


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: all tokens
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None  # number of top logprobs per output token (the chosen token is always included)
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logit_bias: dict[int, float] | None = None
    detokenize: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.FINAL_ONLY
    structured_outputs: StructuredOutputsParams | None = None
    # Filled in by the engine from the model's generation config; not part of the user API.
    all_stop_token_ids: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []
        else:
            self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        if self.logit_bias is not None:
            self.logit_bias = {int(k): float(v) for k, v in self.logit_bias.items()}
        if isinstance(self.structured_outputs, dict):  # as a decoded message or a plain dict gives it
            self.structured_outputs = StructuredOutputsParams(**self.structured_outputs)
        self._verify()
        self.all_stop_token_ids = set(self.stop_token_ids)

    def _verify(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 1, f"n must be at least 1, got {self.n}.")
        _check(-2.0 <= self.presence_penalty <= 2.0,
               f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        _check(-2.0 <= self.frequency_penalty <= 2.0,
               f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        _check(0.0 < self.repetition_penalty <= 2.0,
               f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}.")
        _check(self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}.")
        _check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}.")
        _check(isinstance(self.top_k, int) and self.top_k >= 0,
               f"top_k must be -1 (disable), 0 or a positive integer, got {self.top_k}.")
        _check(0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None:
            _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1,
                   f"max_tokens must be at least 1, got {self.max_tokens}.")
        _check(isinstance(self.min_tokens, int) and self.min_tokens >= 0,
               f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.max_tokens is not None:
            _check(self.min_tokens <= self.max_tokens,
                   f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, got {self.min_tokens}.")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v >= 0), f"{name} must be non-negative, got {v}.")
        assert isinstance(self.stop, list) and self.stop_token_ids is not None  # lists since __post_init__
        _check(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings.")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
               "stop_token_ids must be non-negative integers.")
        if self.seed is not None:
            _check(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}.")
        # A grammar that is complete allows only the stop tokens, which min_tokens would forbid too.
        _check(self.structured_outputs is None or self.min_tokens == 0,
               "min_tokens cannot be combined with structured_outputs (the constraint decides the length).")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < _SAMPLING_EPS

    def clone(self) -> SamplingParams:
        import copy
        return copy.deepcopy(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
