"""Stream tensors from a HF folder's *.safetensors files (sharded or not). Pickle .bin checkpoints
are refused: loading them can run arbitrary code."""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import torch
from safetensors import safe_open

_INDEX_FILE = "model.safetensors.index.json"


def safetensors_files(folder: str) -> list[str]:
    """The checkpoint files to read, from the shard index when there is one."""
    if not os.path.isdir(folder):
        raise ValueError(f"Model folder {folder!r} does not exist.")
    index = os.path.join(folder, _INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(folder, s) for s in shards]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise ValueError(f"{_INDEX_FILE} in {folder!r} names missing shard files: {absent}.")
        return files
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if files:
        return files
    if glob.glob(os.path.join(folder, "*.bin")) or glob.glob(os.path.join(folder, "*.pt")):
        raise ValueError(
            f"Model folder {folder!r} has only PyTorch pickle checkpoints (.bin/.pt), which pagedllm does "
            "not load (unpickling can run arbitrary code). Convert them to safetensors first.")
    raise ValueError(f"Model folder {folder!r} has no *.safetensors weight files.")


def iter_safetensors_weights(folder: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(hf_name, tensor) for every tensor, one file open at a time (memory-mapped)."""
    for path in safetensors_files(folder):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open's handle has keys() but no __iter__
                yield name, f.get_tensor(name)


def safetensors_tensor_names(folder: str) -> list[str]:
    """Every tensor name of the checkpoint, from the files' headers (no tensor is read)."""
    names: list[str] = []
    for path in safetensors_files(folder):
        with safe_open(path, framework="pt") as f:
            names.extend(f.keys())
    return names
