"""CPU kernels in C++, built on first use with torch's extension builder and cached on disk.

They are optional: with no compiler the torch reference path runs instead, with one warning;
KernelConfig.cpu_kernels=False (the platform's choice, platforms/cpu.py) never loads them.

Each build is keyed by everything that decides it (`build_key`): the content of every .cpp and .h
here, the build flags, the interpreter (its path, Python and torch versions) and the CPU
(-march=native). It lives in its own folder under the extensions root (TORCH_EXTENSIONS_DIR, else
torch's ~/.cache/torch_extensions), as a module named after the key, compiled from copies of the
sources kept in that folder:

    <root>/pagedllm/cpu_kernels/<key>/
        src/*.cpp, src/*.h          the sources the build reads (nothing names the checkout)
        build.ninja, *.o
        pagedllm_cpu_<key>.so       the module

So checkouts and venvs no longer rebuild each other's module in one shared folder: the same
sources under the same interpreter share one build (a second checkout loads the first's), and
different ones each build once and coexist. Old keys' folders (a few MB each) are never used
again and may be deleted.

A build says so at INFO before it starts (with the expected time and the folder), every 20 s while
it runs (sources compiled so far) and when it is done; a cached build says where it came from.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import TypedDict

import torch

from pagedllm import envs

logger = logging.getLogger(__name__)
_HERE = os.path.dirname(os.path.abspath(__file__))
# The C++ files of the module, in build order (the headers are found beside them).
SOURCE_NAMES = ("bindings.cpp", "decode_attention.cpp", "varlen_attention.cpp", "kv_cache_write.cpp",
                "linear_f32.cpp", "rms_norm.cpp", "rotary.cpp", "activation.cpp", "sampling.cpp",
                "quant_repack.cpp", "quant_gemm.cpp", "quant_gemm_scalar.cpp", "quant_gemm_avx2.cpp",
                "quant_gemm_avx512.cpp")
SOURCES = [os.path.join(_HERE, name) for name in SOURCE_NAMES]
# The decode attention's source on its own: benchmarks/bench_cpu_attention.py builds another
# version of it beside the rest for A/B runs.
DECODE_ATTENTION_SOURCE = os.path.join(_HERE, "decode_attention.cpp")
# A fresh build took 114-192 s on the project's 2-core machine, shared with other work (README,
# "Performance (CPU)"); ninja compiles the sources in parallel, so more cores take less.
COMPILE_ESTIMATE = "2-3 min on 2 cores"
_PROGRESS_INTERVAL_S = 20.0


def _headers_digest() -> str:
    """The headers' hash, in the flags: torch's extension cache (which the A/B benchmark's builds
    use) keys on the sources and flags only, so editing a header rebuilds those too."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".h"):
            with open(os.path.join(_HERE, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


class BuildFlags(TypedDict):
    extra_cflags: list[str]
    extra_ldflags: list[str]


BUILD_FLAGS: BuildFlags = {
    "extra_cflags": ["-O3", "-march=native", "-fopenmp", f"-DPAGEDLLM_HEADERS={_headers_digest()}"],
    "extra_ldflags": ["-fopenmp"],
}


def read_sources(folder: str = _HERE) -> dict[str, bytes]:
    """Every .cpp and .h file in `folder`, by name."""
    names = sorted(n for n in os.listdir(folder) if n.endswith((".cpp", ".h")))
    contents = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            contents[name] = f.read()
    return contents


def _cpu_features() -> str:
    """The CPU's feature flags: -march=native builds for them, so another CPU needs its own build
    (a cache folder shared between machines must not hand one an illegal instruction)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def build_key(sources: dict[str, bytes], flags: BuildFlags = BUILD_FLAGS) -> str:
    """A short hash of what decides the build: the sources (names and content), the flags, the
    interpreter that will import the module and the CPU it is compiled for."""
    digest = hashlib.sha256()
    for name, content in sorted(sources.items()):
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    environment = [json.dumps(flags, sort_keys=True), sys.executable, sys.version, torch.__version__,
                   platform.machine(), _cpu_features()]
    digest.update("\0".join(environment).encode())
    return digest.hexdigest()[:16]


def build_directory(key: str) -> str:
    """<TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions>/pagedllm/cpu_kernels/<key>."""
    from torch.utils.cpp_extension import get_default_build_root

    root = envs.torch_extensions_dir() or get_default_build_root()
    return os.path.join(root, "pagedllm", "cpu_kernels", key)


def _stage_sources(sources: dict[str, bytes], folder: str) -> None:
    """Copy the sources into the build's own folder, so the build file names no checkout. A file
    already there with the same content is left alone (its time stamp too: ninja keeps the build);
    others are replaced atomically."""
    os.makedirs(folder, exist_ok=True)
    for name, content in sources.items():
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError), open(path, "rb") as f:
            if f.read() == content:
                continue
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, path)


@contextlib.contextmanager
def _build_progress(folder: str, num_sources: int, start: float) -> Iterator[None]:
    """Log how many sources are compiled every _PROGRESS_INTERVAL_S while the build runs."""
    done = threading.Event()

    def report() -> None:
        while not done.wait(_PROGRESS_INTERVAL_S):
            compiled = len(glob.glob(os.path.join(folder, "*.o")))
            logger.info("Compiling CPU kernels: %d of %d sources compiled after %.0f s", compiled, num_sources,
                        time.perf_counter() - start)

    thread = threading.Thread(target=report, name="pagedllm-cpu-kernels-build", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def load_from(folder: str = _HERE) -> ModuleType:
    """Build (or load the cached build of) the kernels whose sources are in `folder`; raises when
    they cannot be built here."""
    from torch.utils.cpp_extension import load

    sources = read_sources(folder)
    key = build_key(sources)
    name = f"pagedllm_cpu_{key}"
    directory = build_directory(key)
    src = os.path.join(directory, "src")
    _stage_sources(sources, src)
    build = functools.partial(load, name=name, sources=[os.path.join(src, n) for n in SOURCE_NAMES],
                              build_directory=directory, verbose=False, **BUILD_FLAGS)
    if any(os.path.isfile(os.path.join(directory, name + ext)) for ext in (".so", ".pyd")):
        module = build()  # ninja finds nothing to do
        logger.info("Loaded CPU kernels from %s", directory)
        return module
    start = time.perf_counter()
    logger.info("Compiling CPU kernels (first use, about %s; cached in %s)", COMPILE_ESTIMATE, directory)
    if os.path.exists(os.path.join(directory, "lock")):
        logger.info("Another process is building them; waiting for it (if none is, delete %s)",
                    os.path.join(directory, "lock"))
    with _build_progress(directory, len(SOURCE_NAMES), start):
        module = build()
    logger.info("Built CPU kernels in %.0f s", time.perf_counter() - start)
    return module


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The compiled module, or None (after one warning) when the kernels cannot be built here."""
    try:
        return load_from(_HERE)
    except Exception as e:  # no compiler, no ninja, unsupported platform: fall back, loudly
        logger.warning("CPU kernels unavailable (%s); using torch ops instead.", e)
        return None


PANEL = 32  # output columns per panel of linear_f32.cpp


def pack_linear_f32(weight: torch.Tensor) -> torch.Tensor:
    """A float32 [out, in] weight as linear_f32's panels: [ceil(out / 32), in, 32], each panel the
    next 32 output columns k-major, zero-padded past `out`."""
    out_features, in_features = weight.shape
    num_panels = -(-out_features // PANEL)
    padded = weight.new_zeros(num_panels * PANEL, in_features)
    padded[:out_features] = weight
    return padded.view(num_panels, PANEL, in_features).transpose(1, 2).contiguous()


@functools.cache
def avx512_kernels() -> ModuleType | None:
    """The kernels if their AVX-512 parts (float32 GEMM, varlen attention, sampling) were built
    here, else None."""
    kernels = load_cpu_kernels()
    return kernels if kernels is not None and kernels.has_avx512() else None
