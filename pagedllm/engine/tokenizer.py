"""Load the tokenizer of a model source through transformers (chat template included)."""
from __future__ import annotations

import os
from typing import Any

from pagedllm.models.source import ModelSource


def load_tokenizer(source: ModelSource, tokenizer: str | None = None) -> Any:
    """A HF tokenizer: from `tokenizer` (a local folder) when given, else from the model's folder
    or its GGUF metadata. Local files only, no remote code; a fresh object per call."""
    from transformers import AutoTokenizer

    if tokenizer is not None:
        if not os.path.isdir(tokenizer):
            raise ValueError(f"Tokenizer folder {tokenizer!r} does not exist.")
        return AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False, local_files_only=True)
    if not os.path.isdir(source.path):
        raise ValueError(f"Model folder {source.path!r} does not exist.")
    kwargs = {"gguf_file": source.gguf_file} if source.is_gguf else {}
    return AutoTokenizer.from_pretrained(source.path, trust_remote_code=False, local_files_only=True, **kwargs)
