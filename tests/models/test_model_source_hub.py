"""Models by Hub id, as vLLM takes them (issue 17, item 17): an argument that is no local path but a
repo id comes through huggingface_hub, from the local cache when it is there (offline); nothing is
downloaded here: the cache is written by the test."""
from __future__ import annotations

import json
import os

import pytest

from pagedllm.models.source import resolve_model_source
from tests.helpers.hub_cache import use_hub_cache, write_hub_snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> str:
    cache = str(tmp_path / "hub")
    use_hub_cache(monkeypatch, cache)
    return cache


def _model_files(tmp_path) -> str:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    return str(folder)


def test_a_cached_repo_id_resolves_offline(hub, tmp_path) -> None:
    snapshot = write_hub_snapshot(hub, "org/tiny", _model_files(tmp_path))
    source = resolve_model_source("org/tiny")
    assert source.path == snapshot and not source.is_gguf


def test_an_uncached_repo_id_offline_is_a_clear_error(hub) -> None:
    with pytest.raises(ValueError, match=r"'org/absent'.*Hugging Face Hub.*") as e:
        resolve_model_source("org/absent")
    assert "HF_HUB_OFFLINE" in str(e.value) or "offline" in str(e.value).lower()


def test_a_local_folder_wins_over_a_repo_id(hub, tmp_path, monkeypatch) -> None:
    write_hub_snapshot(hub, "org/tiny", _model_files(tmp_path))
    local = tmp_path / "work" / "org" / "tiny"
    os.makedirs(local)
    (local / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_model_source("org/tiny").path == str(local)


@pytest.mark.parametrize("model", ["./org/tiny", "/abs/org/tiny", "a/b/c", "~/models/x", "model.gguf"])
def test_paths_are_never_looked_up_on_the_hub(model, hub, monkeypatch) -> None:
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    with pytest.raises(ValueError, match="not found"):
        resolve_model_source(model)


def test_online_the_snapshot_fetches_what_the_engine_reads(monkeypatch, tmp_path) -> None:
    import huggingface_hub

    files = _model_files(tmp_path)
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return files

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model_source("Qwen/Qwen3-0.6B").path == files
    (repo_id, kwargs), = calls
    patterns = kwargs["allow_patterns"]
    assert repo_id == "Qwen/Qwen3-0.6B"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "model-00001-of-00002.safetensors", "model.safetensors.index.json"):
        assert any(_match(name, p) for p in patterns), name
    assert not any(_match("pytorch_model.bin", p) for p in patterns)


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(name, pattern)


def test_a_tokenizer_by_repo_id(hub, tmp_path) -> None:
    from pagedllm.models.source import resolve_tokenizer_folder

    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    snapshot = write_hub_snapshot(hub, "org/tok", str(tok))
    assert resolve_tokenizer_folder("org/tok") == snapshot
    assert resolve_tokenizer_folder(str(tok)) == str(tok)
    assert resolve_tokenizer_folder(None) is None
