"""SpeculativeConfig: vLLM's `speculative_config` dict, validated once (no torch).

    LLM(..., speculative_config={"method": "ngram", "num_speculative_tokens": 4,
                                 "prompt_lookup_min": 2, "prompt_lookup_max": 5})
    pagedllm serve --speculative-config '{"method": "suffix"}'
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any

from pagedllm.registry import LazyRegistry

# Method -> its Proposer (spec_decode/proposer.py). vLLM's other methods are refused, naming these.
PROPOSERS: LazyRegistry[Any] = LazyRegistry("speculative decoding method", {
    "ngram": "pagedllm.spec_decode.ngram:NgramProposer",
    "suffix": "pagedllm.spec_decode.suffix:SuffixProposer",
    "draft_model": "pagedllm.spec_decode.draft_model:DraftModelProposer",
    "eagle": "pagedllm.spec_decode.eagle:EagleProposer",
    "eagle3": "pagedllm.spec_decode.eagle:EagleProposer",
})
_VLLM_METHODS_NOT_YET = ("medusa", "mlp_speculator", "mtp")
# Methods that run a model of their own over the request's tokens: they need `model`, and KV slots
# for the positions they draft ahead (the scheduler's lookahead).
MODEL_METHODS = ("draft_model", "eagle", "eagle3")
# Methods whose model is a head reading the target's hidden states (models/eagle.py)
HEAD_METHODS = ("eagle", "eagle3")
REJECTION_METHODS = ("probabilistic", "strict", "synthetic")


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str
    # Tokens proposed per request and step (the most: a proposer may offer fewer). Default: 3 for
    # ngram, suffix_decoding_max_tree_depth for suffix (vLLM's).
    num_speculative_tokens: int
    # ngram: the longest and shortest n-gram of the latest tokens looked up in the request's tokens
    prompt_lookup_max: int = 5
    prompt_lookup_min: int = 5
    # suffix: how deep the trie indexes (the longest context matched plus continuation), how many
    # finished requests' outputs it keeps, the longest proposal per matched token, and the least
    # estimated probability of a proposed token (all vLLM's names and defaults)
    suffix_decoding_max_tree_depth: int = 24
    suffix_decoding_max_cached_requests: int = 1000
    suffix_decoding_max_spec_factor: float = 1.0
    suffix_decoding_min_token_prob: float = 0.1
    # Steps with at least this many running requests run without speculation (vLLM's name);
    # None: always speculate.
    disable_by_batch_size: int | None = None
    # draft_model: the draft's folder, .gguf file or Hub id (same vocabulary as the target), and how
    # a GGUF draft's weights run (as quantization= for the target; None: its own types on the CPU);
    # eagle / eagle3: the head's folder (its published layout, models/eagle.py)
    model: str | None = None
    quantization: str | None = None
    # How drafts are checked (vLLM's name and values): "probabilistic" (the default) applies the
    # rejection rule with the draft's distribution where the proposer sampled from one, and an exact
    # match where its drafts are fixed tokens; "strict" always checks by exact match (lossless
    # too, lower acceptance for sampled drafts); "synthetic" is for benchmarks only: each draft is
    # accepted with a forced probability whatever the tokens (the output is NOT the target's),
    # so the mechanism's speed can be measured at any acceptance rate.
    rejection_sample_method: str = "probabilistic"
    # synthetic: per-position acceptance rates (position j accepted with probability rates[j],
    # drafts 1..j all accepted; non-increasing, one per speculative token), or the mean tokens per
    # verify step (1 + expected accepted drafts) from which equal conditional rates are derived
    synthetic_acceptance_rates: tuple[float, ...] | None = None
    synthetic_acceptance_length: float | None = None
    # The draft's resolved ModelConfig (pagedllm.config), filled in by EngineArgs; never given.
    draft_model_config: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_speculative_tokens < 1:
            raise ValueError(f"speculative_config: num_speculative_tokens must be at least 1, got "
                             f"{self.num_speculative_tokens}.")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(f"speculative_config: need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{self.prompt_lookup_min} and {self.prompt_lookup_max}.")
        if self.suffix_decoding_max_tree_depth < 1:
            raise ValueError("speculative_config: suffix_decoding_max_tree_depth must be at least 1.")
        if self.suffix_decoding_max_cached_requests < 0:
            raise ValueError("speculative_config: suffix_decoding_max_cached_requests must be >= 0.")
        if self.suffix_decoding_max_spec_factor <= 0:
            raise ValueError("speculative_config: suffix_decoding_max_spec_factor must be positive.")
        if not 0.0 <= self.suffix_decoding_min_token_prob <= 1.0:
            raise ValueError("speculative_config: suffix_decoding_min_token_prob must be in [0, 1].")
        if self.disable_by_batch_size is not None and self.disable_by_batch_size < 2:
            raise ValueError(f"speculative_config: disable_by_batch_size must be at least 2, got "
                             f"{self.disable_by_batch_size}.")
        self._check_rejection_method()
        if self.method in MODEL_METHODS and not self.model:
            raise ValueError(f"speculative_config: method {self.method!r} needs \"model\": the draft model's "
                             "folder, .gguf file or Hub id.")
        if self.method not in MODEL_METHODS and (self.model is not None or self.quantization is not None):
            raise ValueError(f"speculative_config: \"model\" and \"quantization\" are for "
                             f"{', '.join(MODEL_METHODS)}, not {self.method!r}.")

    def _check_rejection_method(self) -> None:
        if self.rejection_sample_method not in REJECTION_METHODS:
            raise ValueError(f"speculative_config: rejection_sample_method must be one of "
                             f"{', '.join(REJECTION_METHODS)}, got {self.rejection_sample_method!r}.")
        rates, length = self.synthetic_acceptance_rates, self.synthetic_acceptance_length
        k = self.num_speculative_tokens
        if self.rejection_sample_method != "synthetic":
            if rates is not None or length is not None:
                raise ValueError("speculative_config: synthetic_acceptance_rates and synthetic_acceptance_length "
                                 "need \"rejection_sample_method\": \"synthetic\".")
            return
        if (rates is None) == (length is None):
            raise ValueError("speculative_config: the synthetic rejection method needs exactly one of "
                             "synthetic_acceptance_rates and synthetic_acceptance_length.")
        if rates is not None:
            if len(rates) != k:
                raise ValueError(f"speculative_config: synthetic_acceptance_rates needs one rate per speculative "
                                 f"token ({k}), got {len(rates)}.")
            if any(not 0.0 <= r <= 1.0 for r in rates) or any(b > a for a, b in itertools.pairwise(rates)):
                raise ValueError("speculative_config: synthetic_acceptance_rates must lie in [0, 1] and never "
                                 f"increase (a draft is accepted only after the ones before it), got {list(rates)}.")
        elif length is not None and not 1.0 <= length <= k + 1:
            raise ValueError(f"speculative_config: synthetic_acceptance_length must be in [1, "
                             f"num_speculative_tokens + 1 = {k + 1}], got {length}.")

    def synthetic_conditional_rates(self) -> list[float]:
        """Per position j, the probability that draft j is accepted once drafts 1..j-1 were (the
        synthetic method's draws): rates[j] / rates[j - 1], or for a mean length L the one rate a
        with 1 + a + a^2 + ... + a^k = L."""
        k = self.num_speculative_tokens
        if self.synthetic_acceptance_rates is not None:
            rates = [1.0, *self.synthetic_acceptance_rates]
            return [b / a if a > 0 else 0.0 for a, b in itertools.pairwise(rates)]
        assert self.synthetic_acceptance_length is not None
        target = self.synthetic_acceptance_length
        lo, hi = 0.0, 1.0
        for _ in range(60):  # bisection: the mean length grows with a
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sum(mid ** j for j in range(k + 1)) < target else (lo, mid)
        return [lo] * k

    @property
    def num_lookahead_tokens(self) -> int:
        """KV slots a request needs past its scheduled tokens: a draft model writes the KV of the
        last sampled token and of its first k - 1 drafts before the next step checks them."""
        return self.num_speculative_tokens if self.method in MODEL_METHODS else 0

    def speculates(self, num_running: int) -> bool:
        """Whether a step with this many running requests speculates."""
        return self.disable_by_batch_size is None or num_running < self.disable_by_batch_size

    @classmethod
    def from_user(cls, value: SpeculativeConfig | dict[str, Any] | str | None) -> SpeculativeConfig | None:
        """From vLLM's dict (or its JSON text, as `--speculative-config` takes). ValueError naming
        the problem for an unknown method or key, or a bad value."""
        if value is None or isinstance(value, SpeculativeConfig):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"speculative_config is not valid JSON: {e}.") from None
        if not isinstance(value, dict):
            raise ValueError(f"speculative_config must be a dict (JSON object), got {type(value).__name__}.")
        given = dict(value)
        method = given.pop("method", None)
        if method is None and given.get("model") in ("ngram", "[ngram]"):  # vLLM's older spelling
            method = "ngram"
            given.pop("model")
        _check_method(method)
        known = {f.name for f in dataclasses.fields(cls)} - {"method", "draft_model_config"}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"speculative_config: unknown key(s) {', '.join(map(repr, unknown))} for method "
                             f"{method!r}; known: {', '.join(sorted(known))}.")
        for key in ("num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min",
                    "suffix_decoding_max_tree_depth", "suffix_decoding_max_cached_requests", "disable_by_batch_size"):
            if key in given and given[key] is not None and (not isinstance(given[key], int) or
                                                              isinstance(given[key], bool)):
                raise ValueError(f"speculative_config: {key} must be an integer, got {given[key]!r}.")
        _fill_lookup_defaults(given)
        _read_synthetic(given)
        if "num_speculative_tokens" not in given or given["num_speculative_tokens"] is None:
            given["num_speculative_tokens"] = (given.get("suffix_decoding_max_tree_depth", 24)
                                               if method == "suffix" else 3)
        if "quantization" in given and given["quantization"] not in (None, "awq", "fp8", "gguf", "gptq", "none"):
            raise ValueError(f"speculative_config: quantization must be one of awq, fp8, gguf, gptq, none; got "
                             f"{given['quantization']!r}.")
        return cls(method=method, **given)


def _check_method(method: object) -> None:
    if method in PROPOSERS:
        return
    supported = ", ".join(PROPOSERS.names())
    if method in _VLLM_METHODS_NOT_YET:
        raise ValueError(f"speculative_config: method {method!r} is not supported yet; supported: {supported}.")
    raise ValueError(f"speculative_config: unknown method {method!r}; supported: {supported}.")


def _read_synthetic(given: dict[str, Any]) -> None:
    rates = given.get("synthetic_acceptance_rates")
    if rates is not None:
        if not isinstance(rates, (list, tuple)) or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) for r in rates):
            raise ValueError(f"speculative_config: synthetic_acceptance_rates must be a list of numbers, "
                             f"got {rates!r}.")
        given["synthetic_acceptance_rates"] = tuple(float(r) for r in rates)
    length = given.get("synthetic_acceptance_length")
    if length is not None and (not isinstance(length, (int, float)) or isinstance(length, bool)):
        raise ValueError(f"speculative_config: synthetic_acceptance_length must be a number, got {length!r}.")


def _fill_lookup_defaults(given: dict[str, Any]) -> None:
    # vLLM's rule: either bound alone sets both; neither gives 5 and 5.
    lo, hi = given.get("prompt_lookup_min"), given.get("prompt_lookup_max")
    if lo is None and hi is None:
        lo = hi = 5
    elif lo is None:
        lo = hi
    elif hi is None:
        hi = lo
    given["prompt_lookup_min"], given["prompt_lookup_max"] = lo, hi
