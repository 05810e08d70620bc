"""Default sampling parameters: neutral, or the model creator's from generation_config.json.

vLLM's `--generation-config`: "auto" (the default) takes the sampling fields of the model folder's
generation_config.json as the defaults of requests that do not set them, "vllm" ignores that file,
and a folder path reads the file from there. The fields are vLLM's: temperature, top_p, top_k, min_p,
repetition_penalty, and max_new_tokens as max_tokens. Torch-free: the HTTP layer uses it too.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pagedllm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

GENERATION_CONFIG_FILE = "generation_config.json"
# generation_config.json's name -> SamplingParams' name
_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
           "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


@dataclass(frozen=True)
class SamplingDefaults:
    """What a request gets for the sampling parameters it leaves unset."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int | None = None  # None: the API's own default (16 for offline and /v1/completions)

    def overrides(self) -> dict[str, Any]:
        """The fields that differ from the neutral defaults."""
        neutral = SamplingDefaults()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(neutral, f.name)}

    def sampling_params(self) -> SamplingParams:
        """The SamplingParams of a request that sets nothing (offline `LLM.generate(prompts)`)."""
        return SamplingParams(**self.overrides())


def load_sampling_defaults(generation_config: str, model_folder: str | None) -> SamplingDefaults:
    """`generation_config` is "auto" (the model folder's file, if it has one), "vllm" (neutral) or a
    folder holding generation_config.json. ValueError for a folder without it or invalid values."""
    if generation_config == "vllm":
        return SamplingDefaults()
    if generation_config == "auto":
        if model_folder is None or not os.path.isfile(os.path.join(model_folder, GENERATION_CONFIG_FILE)):
            return SamplingDefaults()
        path = os.path.join(model_folder, GENERATION_CONFIG_FILE)
    else:
        folder = os.path.expanduser(generation_config)
        if not os.path.isdir(folder):
            raise ValueError(f"generation_config {generation_config!r} is not 'auto', 'vllm' or a folder.")
        path = os.path.join(folder, GENERATION_CONFIG_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"generation_config folder {generation_config!r} has no {GENERATION_CONFIG_FILE}.")
    return _from_file(path)


def _from_file(path: str) -> SamplingDefaults:
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Cannot read {path}: {e}") from None
    values = {ours: raw[theirs] for theirs, ours in _FIELDS.items() if raw.get(theirs) is not None}
    try:
        SamplingParams(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} has sampling values pagedllm cannot use: {e}") from None
    defaults = SamplingDefaults(**values)
    if values:
        logger.info("Default sampling parameters from %s: %s (--generation-config vllm ignores them).", path,
                    ", ".join(f"{k}={v}" for k, v in defaults.overrides().items()))
    return defaults
