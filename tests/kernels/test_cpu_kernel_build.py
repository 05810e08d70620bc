"""Where the C++ CPU kernels build (kernels/cpu/__init__.py): in a folder and under a module name
keyed by the sources, the flags and the interpreter, so two checkouts with the same sources share
one build and checkouts with different sources keep their own. torch's builder is replaced by a
recorder: nothing is compiled here."""
from __future__ import annotations

import logging
import os
import shutil
from types import ModuleType

import pytest
import torch.utils.cpp_extension

from pagedllm.kernels import cpu


@pytest.fixture
def checkouts(tmp_path):
    """Two copies of the kernels' sources, as two checkouts of the same commit would hold them."""
    folders = []
    for name in ("checkout_a", "checkout_b"):
        folder = tmp_path / name / "pagedllm" / "kernels" / "cpu"
        shutil.copytree(os.path.dirname(cpu.__file__), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        folders.append(str(folder))
    return folders


@pytest.fixture
def recorded_loads(tmp_path, monkeypatch):
    """torch's `load` replaced by one that records its arguments, the extensions root in tmp_path."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    calls: list[dict] = []

    def load(**kwargs):
        calls.append(kwargs)
        return ModuleType(kwargs["name"])

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    return calls


def test_identical_sources_share_a_key_and_a_changed_one_does_not(checkouts):
    a, b = checkouts
    key = cpu.build_key(cpu.read_sources(a))
    assert key == cpu.build_key(cpu.read_sources(b)) == cpu.build_key(cpu.read_sources())
    with open(os.path.join(b, "rotary.cpp"), "a") as f:
        f.write("\n// edited\n")
    assert cpu.build_key(cpu.read_sources(b)) != key
    with open(os.path.join(a, "simd_f32.h"), "a") as f:  # a header counts too
        f.write("\n")
    assert cpu.build_key(cpu.read_sources(a)) not in (key, cpu.build_key(cpu.read_sources(b)))


def test_the_key_covers_the_flags_and_the_interpreter(monkeypatch):
    sources = cpu.read_sources()
    key = cpu.build_key(sources)
    flags: cpu.BuildFlags = {"extra_cflags": [*cpu.BUILD_FLAGS["extra_cflags"], "-DX"],
                             "extra_ldflags": cpu.BUILD_FLAGS["extra_ldflags"]}
    assert cpu.build_key(sources, flags) != key
    monkeypatch.setattr(cpu.sys, "executable", "/elsewhere/venv/bin/python")
    assert cpu.build_key(sources) != key
    monkeypatch.undo()
    monkeypatch.setattr(cpu.torch, "__version__", "0.0.0")
    assert cpu.build_key(sources) != key


def test_the_build_is_named_and_placed_by_its_key(checkouts, recorded_loads, tmp_path):
    a, b = checkouts
    cpu.load_from(a)
    cpu.load_from(b)
    key = cpu.build_key(cpu.read_sources(a))
    directory = str(tmp_path / "extensions" / "pagedllm" / "cpu_kernels" / key)
    first, second = recorded_loads
    assert first["name"] == f"pagedllm_cpu_{key}"
    assert first["build_directory"] == directory
    # It compiles copies kept beside the build, so nothing in the build file names a checkout:
    # the second checkout's call is the first's, and ninja finds the first's build up to date.
    assert first["sources"] == [os.path.join(directory, "src", name) for name in cpu.SOURCE_NAMES]
    assert second == first
    assert sorted(os.listdir(os.path.join(directory, "src"))) == sorted(cpu.read_sources(a))
    with open(os.path.join(b, "rotary.cpp"), "a") as f:
        f.write("\n// edited\n")
    cpu.load_from(b)
    assert recorded_loads[2]["build_directory"] != directory  # beside the first, not over it


def test_first_build_and_cache_hit_are_logged(checkouts, recorded_loads, caplog):
    a, _ = checkouts
    with caplog.at_level(logging.INFO, logger="pagedllm.kernels.cpu"):
        cpu.load_from(a)
        directory = recorded_loads[0]["build_directory"]
        assert "Compiling CPU kernels (first use, about" in caplog.text and directory in caplog.text
        assert "Built CPU kernels in" in caplog.text
        caplog.clear()
        open(os.path.join(directory, recorded_loads[0]["name"] + ".so"), "w").close()  # as the build leaves it
        cpu.load_from(a)
    assert caplog.messages == [f"Loaded CPU kernels from {directory}"]


def test_a_failed_build_is_one_warning_and_none(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def load(**kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    with caplog.at_level(logging.WARNING, logger="pagedllm.kernels.cpu"):
        assert cpu.load_cpu_kernels.__wrapped__() is None  # uncached: the engine's module stays loaded
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "no compiler" in caplog.text
