"""Start reading the next GEMM's weight into L2 while a small kernel runs.

At small batch a decode step is a chain of weight-streaming GEMMs separated by small kernels
(RMSNorm, attention, SiLU-and-mul) during which HBM is nearly idle: about 0.6 ms of a Llama-3-8B
batch-1 step on an H100. A small kernel that also asks the copy engine for the first bytes of the
weight that the next GEMM reads (`cp.async.bulk.prefetch.L2`, Hopper and later; fire and forget,
no registers or shared memory held) lets that GEMM find them in L2.

The weights are [in, out] row-major (layers/linear.py), so their first bytes are the first rows of
K, which every output tile of the GEMM reads first. The prefetch is a hint: results never depend on
it, and kernels compile without it under the interpreter or on older GPUs.

The bytes asked for are set per kind of window (how long the small kernel runs, times the card's
bandwidth, within the L2): `PAGEDLLM_L2_PREFETCH_MB="attention,norm,activation"` (MiB each, "0"
turns it off).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

CHUNK_BYTES = 16384  # one bulk prefetch instruction each
# Above this many rows the GEMMs are compute-bound (H100: ~260 FLOPs per weight byte); no prefetch.
MAX_ROWS = 64
_DEFAULT_MB = "16,4,4"
_CHUNK = tl.constexpr(CHUNK_BYTES)


@dataclass(frozen=True)
class L2Prefetch:
    """A kernel's prefetch: `num_bytes` (a multiple of 16) from `address` (a weight's data)."""

    address: int
    num_bytes: int


@dataclass(frozen=True)
class PrefetchBudget:
    """MiB asked for in each kind of window."""

    attention: float
    norm: float
    activation: float


@functools.cache
def prefetch_budget() -> PrefetchBudget | None:
    """The per-window sizes, or None where prefetching does not apply (no Hopper GPU, or off)."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        return None
    sizes = [float(s) for s in os.environ.get("PAGEDLLM_L2_PREFETCH_MB", _DEFAULT_MB).split(",")]
    if not any(sizes):
        return None
    attention, norm, activation = (sizes * 3)[:3] if len(sizes) == 1 else sizes
    return PrefetchBudget(attention, norm, activation)


def l2_prefetch_of(weight: torch.Tensor, mib: float) -> L2Prefetch | None:
    """The first `mib` MiB of `weight` (all of it if smaller)."""
    num_bytes = min(weight.numel() * weight.element_size(), int(mib * (1 << 20))) // 16 * 16
    if num_bytes == 0 or not weight.is_cuda or weight.data_ptr() % 16:
        return None
    return L2Prefetch(weight.data_ptr(), num_bytes)


def launch_args(prefetch: L2Prefetch | None, num_rows: int) -> tuple[int, int, bool]:
    """(address, num_bytes, PREFETCH) for a kernel's launch: off past MAX_ROWS rows."""
    if prefetch is None or num_rows > MAX_ROWS:
        return 0, 0, False
    return prefetch.address, prefetch.num_bytes, True


@triton.jit
def issue_l2_prefetch(address, num_bytes, program, num_programs, LANES: tl.constexpr):
    """Program `program` of `num_programs` asks for its share of the chunks of CHUNK_BYTES (the
    last one shorter), LANES at a time (LANES = the kernel's threads, so no lane is replicated).
    Returns at once: the copy engine does the reads."""
    lanes = tl.arange(0, LANES)
    num_chunks = tl.cdiv(num_bytes, _CHUNK)
    for first in range(program * LANES, num_chunks, num_programs * LANES):
        chunk = (first + lanes).to(tl.int64)
        size = tl.minimum(num_bytes - chunk * _CHUNK, _CHUNK).to(tl.int32)  # <= 0: past the end
        tl.inline_asm_elementwise(
            asm="""{
            .reg .pred p;
            setp.gt.s32 p, $2, 0;
            @p cp.async.bulk.prefetch.L2.global [$1], $2;
            mov.u32 $0, 0;
            }""",
            constraints="=r,l,r",
            args=[address + chunk * _CHUNK, size],
            dtype=tl.int32, is_pure=False, pack=1,
        )
