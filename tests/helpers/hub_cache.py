"""A Hugging Face hub cache written by hand (nothing downloaded): models--ORG--NAME/refs/main names a
snapshot folder that holds the repository's files, as huggingface_hub lays it out."""
from __future__ import annotations

import os
import shutil

REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hub_snapshot(cache_dir: str, repo_id: str, files_from: str) -> str:
    """Put the files of the folder `files_from` in the cache as `repo_id`'s main; returns the snapshot."""
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", REVISION)
    shutil.copytree(files_from, snapshot)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(REVISION)
    return snapshot


def use_hub_cache(monkeypatch, cache_dir: str) -> None:
    """Point huggingface_hub at `cache_dir`, offline: through the environment (what a subprocess and a
    fresh import read) and through its constants (read once, when this process imported it)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", cache_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache_dir)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
