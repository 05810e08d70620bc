"""Per-position seeds, so a seeded request's noise depends only on (seed, output index).

The noise for the k-th output token of a request with `seed` comes from a generator seeded by
`position_seed(seed, k)`. It never depends on the batch, the row, or how many steps ran before,
so the same seed gives the same tokens in any batch and after preemption/recompute.
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(x: int) -> int:
    # SplitMix64's finaliser: a bijection on 64 bits that spreads every input bit over the output,
    # so nearby (seed, k) pairs give unrelated generator seeds.
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def position_seed(seed: int, output_index: int, stream: int = 0) -> int:
    """A 64-bit seed for the noise of output token `output_index` of a request seeded with `seed`.
    `stream` > 0 gives independent noise for the same position (speculative decoding's draft
    sampling and acceptance draws, apart from the token's own)."""
    base = _splitmix64((_splitmix64(seed & _MASK64) + output_index) & _MASK64)
    return base if stream == 0 else _splitmix64((base + stream) & _MASK64)


def position_generator(seed: int, output_index: int, device: torch.device, stream: int = 0) -> torch.Generator:
    """A fresh generator on `device` for output token `output_index` of a request seeded with `seed`."""
    return torch.Generator(device=device).manual_seed(position_seed(seed, output_index, stream))
