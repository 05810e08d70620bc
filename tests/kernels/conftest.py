"""Kernel tests: run the Triton kernels under Triton's CPU interpreter when no GPU is visible.

TRITON_INTERPRET must be set before triton is imported (jit functions, triton's own tl.* helpers
among them, pick compiled or interpreted mode when defined), so it is set here, before the test
modules import the kernels. It is set only
without a GPU: on a CUDA machine the same tests compile and run the real kernels. Nothing on the
CPU paths reads it (the layers call Triton only for CUDA tensors), so other tests are unaffected.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

# Triton reads the variable when it is imported (its own tl.* helpers are jit functions too), so
# if a test module collected before this directory imported it, it is too late to switch here.
_IMPORTED_TOO_EARLY = False
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    _IMPORTED_TOO_EARLY = "triton" in sys.modules
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _IMPORTED_TOO_EARLY:
        return
    skip = pytest.mark.skip(reason="triton was imported before tests/kernels/conftest.py could set "
                                   "TRITON_INTERPRET=1; run with TRITON_INTERPRET=1 in the environment")
    for item in items:
        if item.path.name.startswith("test_triton_"):
            item.add_marker(skip)


def _patch_interpreter_scalar_index() -> None:
    """Triton <= 3.6's interpreter turns a scalar (a 1-element array there) into a loop bound
    with int(array), which NumPy >= 2.4 rejects (triton-lang/triton#9171, fixed upstream after
    3.6). Squeeze first, in tests only; compiled kernels never take this path."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_pagedllm_patched", False):
        return

    def patched(tensor, scope):  # type: ignore[no-untyped-def]
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._pagedllm_patched = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


def _patch_interpreter_bf16_dot() -> None:
    """Triton 3.6's interpreter keeps bfloat16 (and fp8) as raw integers and feeds those to
    np.matmul, so a bf16 or fp8 tl.dot returns garbage. Widen such operands to float32 first
    (exact: bf16 is the top half of a float32, and e4m3 values are float32 values), in tests only."""
    try:
        import numpy as np
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return
    builder = interpreter.InterpreterBuilder
    original = builder.create_dot
    if getattr(original, "_pagedllm_patched", False):
        return

    def widen(h):  # type: ignore[no-untyped-def]
        if h.dtype.scalar == tl.float8e4nv:
            raw = torch.from_numpy(np.ascontiguousarray(h.data).view(np.uint8))
            return interpreter.TensorHandle(raw.view(torch.float8_e4m3fn).float().numpy(), tl.float32)
        if h.dtype.scalar != tl.bfloat16:
            return h
        return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):  # type: ignore[no-untyped-def]
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot._pagedllm_patched = True  # type: ignore[attr-defined]
    builder.create_dot = create_dot


def _patch_interpreter_bf16_rounding() -> None:
    """Triton 3.6's interpreter casts float32 -> bfloat16 by truncation, and float32 -> fp8 e4m3
    wrongly where rounding carries into the exponent; the GPU rounds both to nearest even. Round
    like the GPU, so results here match what the kernels compute there."""
    try:
        import numpy as np
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return
    builder = interpreter.InterpreterBuilder
    original = builder.cast_impl
    if getattr(original, "_pagedllm_patched", False):
        return

    def cast_impl(self, src, dst_type):  # type: ignore[no-untyped-def]
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return original(self, src, dst_type)
        data = np.ascontiguousarray(src.data, dtype=np.float32)
        bits = data.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        rounded = np.where(np.isnan(data), np.uint16(0x7FC0), rounded)
        return interpreter.TensorHandle(rounded, tl.bfloat16)

    cast_impl._pagedllm_patched = True  # type: ignore[attr-defined]
    builder.cast_impl = cast_impl
    original_fp_to_fp = builder.create_fp_to_fp
    # as the interpreter stores them: fp8 and bf16 as raw integers
    stored = {tl.float8e4nv: (torch.float8_e4m3fn, torch.uint8), tl.bfloat16: (torch.bfloat16, torch.int16),
              tl.float16: (torch.float16, torch.float16), tl.float32: (torch.float32, torch.float32)}

    def create_fp_to_fp(self, src, dst_type, rounding_mode):  # type: ignore[no-untyped-def]
        s, d = src.dtype.scalar, dst_type.scalar
        if tl.float8e4nv not in (s, d) or s not in stored or d not in stored:
            return original_fp_to_fp(self, src, dst_type, rounding_mode)
        # its own conversions to and from e4m3 go wrong, e.g. where the mantissa rounds up and
        # carries into the exponent (124.3 -> 64, not 128): convert with torch, which rounds
        # to nearest even as the GPU does
        raw = torch.from_numpy(np.ascontiguousarray(src.data))
        value = raw.view(stored[s][1]).view(stored[s][0]) if s != tl.float32 else raw
        out = value.to(stored[d][0]).view(stored[d][1]).numpy()
        return interpreter.TensorHandle(out.view(interpreter._get_np_dtype(dst_type)), d)

    builder.create_fp_to_fp = create_fp_to_fp


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter_scalar_index()
    _patch_interpreter_bf16_dot()
    _patch_interpreter_bf16_rounding()
