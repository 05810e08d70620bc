"""The Triton cache-write and paged-attention kernels against the torch oracle (torch_ref).

Without a GPU these run under Triton's CPU interpreter (see conftest.py), so shapes stay small;
with one, the same tests compile the real kernels, plus larger GPU-only cases and a CUDA-graph
replay. Caches are NaN everywhere a request may not read, outputs and split-K workspaces are
NaN before each run, so a stray read or an unwritten element fails the test.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.attention.base import AttentionBackendOptions, AttentionMetadata, QKVPrologue  # noqa: E402
from pagedllm.attention.registry import create_backend  # noqa: E402
from pagedllm.attention.torch_ref import TorchAttentionBackend  # noqa: E402
from pagedllm.attention.triton_paged import NUM_SPLITS_KEY, TritonPagedAttentionBackend  # noqa: E402
from pagedllm.kernels.triton.paged_attention import SplitWorkspace, paged_attention  # noqa: E402
from pagedllm.kernels.triton.reshape_and_cache import reshape_and_cache  # noqa: E402
from pagedllm.kernels.triton.rotary import rotary_embedding_  # noqa: E402
from tests.helpers.attn_metadata import build_metadata  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# ||out - ref|| / ||ref||: fp32 runs IEEE products; half types round P to 8 or 11 bits.
REL_TOL = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 3e-3}


@dataclass
class Case:
    metadata: AttentionMetadata
    cache: torch.Tensor  # [2, num_blocks, block_size, kv, D], NaN outside the cached prefixes
    query: torch.Tensor  # [T, H, D]
    key: torch.Tensor  # [T, kv, D], the new tokens' K
    value: torch.Tensor


def make_case(num_cached: list[int], num_new: list[int], heads: int, kv_heads: int, head_size: int,
              block_size: int, dtype: torch.dtype, seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    seq_lens = [c + n for c, n in zip(num_cached, num_new)]
    needed = [max(1, -(-s // block_size)) for s in seq_lens]
    num_blocks = sum(needed) + 3
    free = list(range(num_blocks))
    rng.shuffle(free)  # non-contiguous, out-of-order blocks
    block_lists = [[free.pop() for _ in range(n)] for n in needed]
    cache = torch.full((2, num_blocks, block_size, kv_heads, head_size), float("nan"))
    for blocks, cached in zip(block_lists, num_cached):
        for p in range(cached):
            cache[:, blocks[p // block_size], p % block_size] = torch.randn(2, kv_heads, head_size, generator=gen)
    total = sum(num_new)
    q = torch.randn(total, heads, head_size, generator=gen)
    k = torch.randn(total, kv_heads, head_size, generator=gen)
    v = torch.randn(total, kv_heads, head_size, generator=gen)
    md = build_metadata(num_cached, num_new, block_lists, block_size, device=DEVICE)
    return Case(md, cache.to(DEVICE, dtype), q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype))


def reference(case: Case, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, cache after the write) from the torch backend in float32."""
    cache = case.cache.float()
    out = TorchAttentionBackend().forward(case.query.float(), case.key.float(), case.value.float(), cache,
                                          case.metadata, scale)
    return out, cache


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert not got.isnan().any(), "NaN in output: an element was not written or a poisoned slot was read"
    err = ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)).item()
    assert err < REL_TOL[dtype], f"relative error {err:.2e} over {REL_TOL[dtype]:.0e}"


def run_kernel(case: Case, scale: float, num_splits: int = 1) -> torch.Tensor:
    """Cache write + attention kernel, with output and workspace poisoned first."""
    md = case.metadata
    reshape_and_cache(case.key, case.value, case.cache, md.slot_mapping, md.num_actual_tokens)
    out = torch.full_like(case.query, float("nan"))
    heads, head_size = case.query.shape[1:]
    workspace = SplitWorkspace.allocate(md.num_reqs * num_splits, heads, head_size, torch.device(DEVICE))
    workspace.part_out.fill_(float("nan"))
    workspace.part_lse.fill_(float("nan"))
    for _ in range(2):  # twice: the split counters must be back at zero after a launch
        paged_attention(out, case.query, case.cache, md.block_table, md.seq_lens, md.query_start_loc,
                        md.num_actual_tokens, md.num_reqs, scale, md.is_decode_only, num_splits, workspace)
        assert not workspace.counters.any()
    return out


def check(case: Case, dtype: torch.dtype, num_splits: int = 1) -> None:
    scale = 1 / math.sqrt(case.query.shape[-1])
    want, want_cache = reference(case, scale)
    got = run_kernel(case, scale, num_splits)
    assert_close_rel(got, want, dtype)
    # The new K/V landed in their slots bit for bit, and nothing else was touched (NaN stays NaN).
    torch.testing.assert_close(case.cache.float(), want_cache.to(case.cache.dtype).float(), rtol=0, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_size,block_size", [(8, 2, 64, 16), (4, 4, 32, 8), (6, 1, 128, 32)])
def test_decode_batch(dtype, heads, kv_heads, head_size, block_size):
    check(make_case([0, 5, 16, 31, 70], [1] * 5, heads, kv_heads, head_size, block_size, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [3, 8])  # 8: more splits than key tiles, so some are empty
def test_decode_split_k(dtype, num_splits):
    # 601 keys: 10 tiles of 64, split 3 or 5 ways (at least 2 tiles a split); 200 and 129: 2 splits;
    # 3: one tile, written by split 0 alone; 0: padding
    check(make_case([601, 200, 3, 0, 129], [1] * 5, 8, 2, 64, 16, dtype, seed=1), dtype, num_splits)


@pytest.mark.parametrize("seq_len", [601, 130, 40])
def test_decode_split_k_one_request(seq_len):
    # alone in the batch a split may take a single key tile: 601 keys in 64-key tiles make 10
    # tiles over 8 splits (5 used), 130 make 3 splits, 40 one (written without partials)
    check(make_case([seq_len], [1], 8, 2, 64, 16, torch.float32, seed=7), torch.float32, 8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_prefill_chunks_and_decodes(dtype):
    # prefill from scratch, chunk after a non-aligned prefix, decodes, a 1-token chunk, a long chunk
    case = make_case([0, 9, 17, 4, 0, 8, 3], [6, 5, 1, 1, 1, 8, 40], 8, 2, 64, 4, dtype, seed=2)
    check(case, dtype)


@pytest.mark.parametrize("heads,kv_heads,head_size", [(6, 3, 24), (12, 2, 32), (4, 1, 16)])
def test_mixed_odd_groups_and_head_sizes(heads, kv_heads, head_size):
    # group sizes 2, 6, 4 and a head size that is not a power of two (24, as in a tiny qwen3)
    check(make_case([3, 0, 20], [7, 1, 13], heads, kv_heads, head_size, 16, torch.float32, seed=3), torch.float32)


def test_padded_decode_requests_are_harmless():
    """A captured graph's padding: requests with seq_len 0 or 1 and slot -1."""
    case = make_case([10, 0, 33], [1, 1, 1], 8, 2, 32, 16, torch.float32, seed=4)
    md = case.metadata
    md.seq_lens[1] = 0  # padded request: no context at all
    md.seq_lens_cpu[1] = 0
    md.slot_mapping[1] = -1
    before = case.cache.clone()
    out = run_kernel(case, 0.2, num_splits=2)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert not out.isnan().any()
    changed = ~((case.cache == before) | (case.cache.isnan() & before.isnan()))
    assert changed.any(dim=(0, 3, 4)).sum() == 2  # only the two real tokens' slots were written


def test_backend_forward_matches_torch_and_zeroes_padding_rows():
    backend = create_backend("triton")
    assert isinstance(backend, TritonPagedAttentionBackend)
    for num_new, splits in (([1, 1, 1], 4), ([3, 1, 5], None)):
        case = make_case([40, 2, 17], num_new, 8, 2, 64, 16, torch.float32, seed=5)
        if splits:
            case.metadata.backend_cache[NUM_SPLITS_KEY] = splits
        pad = 2  # rows past num_actual_tokens, as a graph's padded batch has
        query = torch.cat([case.query, torch.randn(pad, *case.query.shape[1:], device=DEVICE)])
        key = torch.cat([case.key, torch.randn(pad, *case.key.shape[1:], device=DEVICE)])
        value = torch.cat([case.value, torch.randn(pad, *case.value.shape[1:], device=DEVICE)])
        want, _ = reference(case, 0.125)
        got = backend.forward(query, key, value, case.cache, case.metadata, 0.125)
        assert_close_rel(got[:-pad], want, torch.float32)
        assert torch.equal(got[-pad:], torch.zeros_like(got[-pad:]))


def test_reshape_and_cache_writes_only_its_slots():
    gen = torch.Generator().manual_seed(6)
    cache = torch.full((2, 5, 16, 3, 32), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    slots = torch.tensor([17, -1, 0, 79, 40, -1], device=DEVICE)
    key = torch.randn(6, 3, 32, generator=gen).to(DEVICE, torch.bfloat16)
    value = torch.randn(6, 3, 32, generator=gen).to(DEVICE, torch.bfloat16)
    reshape_and_cache(key, value, cache, slots, 6)
    flat = cache.view(2, 80, 3, 32)
    for i, s in enumerate(slots.tolist()):
        if s >= 0:
            assert torch.equal(flat[0, s], key[i]) and torch.equal(flat[1, s], value[i])
    assert flat.isnan().all(dim=(0, 2, 3)).sum() == 80 - 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_prologue_equals_rotary_then_forward(dtype):
    """The backend's fused path (rotary inside the cache write) against the layer rotating q and k
    first: same output, same cache, q and k rotated in place alike."""
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    case = make_case([0, 9, 30, 4], [6, 1, 1, 12], 8, 2, 64, 16, dtype, seed=11)
    md = case.metadata
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip([0, 9, 30, 4], [6, 1, 1, 12])]).to(DEVICE)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    backend = TritonPagedAttentionBackend()
    want_q, want_k = case.query.clone(), case.key.clone()
    want_cache = case.cache.clone()
    rotary_embedding_(positions, want_q.view(len(positions), -1), want_k.view(len(positions), -1),
                      rope.cos_sin_cache, 64)
    want = backend.forward(want_q, want_k, case.value, want_cache, md, 0.125)
    got = backend.forward(case.query, case.key, case.value, case.cache, md, 0.125,
                          QKVPrologue(positions, rope.cos_sin_cache))
    assert torch.equal(got, want)
    assert torch.equal(case.query, want_q) and torch.equal(case.key, want_k)
    assert torch.equal(case.cache.nan_to_num(), want_cache.nan_to_num())
    assert torch.equal(case.cache.isnan(), want_cache.isnan())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("norm_scale", [False, True])
def test_decode_rotates_and_writes_the_cache_in_the_attention_kernel(dtype, splits, qk_norm, norm_scale):
    """Decode steps take the rotary (and Qwen3's q/k norm) into the attention kernel, which also
    writes the new K/V: the same output and cache as the norm, rotary + cache write and attention
    one after another. Bit for bit under the interpreter without the norms; on a GPU the compiler
    contracts the rotation's products into FMAs differently in the two kernels (and the norm's
    float32 sums run in another order), so there it is within the dtype's rounding. Split-K with
    the new token in the last split only; a padded row (slot -1) writes nothing. With norm_scale
    (the input norm folded into qkv) q, k and v are first scaled by 1 / rms of the token's h."""
    from pagedllm.kernels.reference import scale_rows_by_inv_rms
    from pagedllm.layers.norm import RMSNorm
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    # 63 and 127: the new token ends a full 64-key tile (the tile the kernel would otherwise fold
    # unmasked, as it reads the new K/V from registers).
    cached = [0, 9, 30, 63, 70, 127, 0]
    n = len(cached)
    case = make_case(cached, [1] * n, 8, 2, 64, 16, dtype, seed=13)
    md = case.metadata
    md.slot_mapping[n - 1] = -1  # a padded row of a CUDA graph
    md.backend_cache[NUM_SPLITS_KEY] = splits
    positions = torch.tensor(cached, device=DEVICE)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    norms = None
    want_q, want_k, want_v = case.query.clone(), case.key.clone(), case.value
    scale = None
    if norm_scale:
        h = (torch.randn(n, 200, generator=torch.Generator().manual_seed(5)) * 4).to(DEVICE, dtype)
        scale = (h, 1e-5)
        want_q, want_k, want_v = (scale_rows_by_inv_rms(x.cpu(), h.cpu(), 1e-5).to(DEVICE)
                                  for x in (want_q, want_k, want_v))
    if qk_norm:
        with torch.device(DEVICE):  # built on the device: its platform's kernels
            norms = (RMSNorm(64, 1e-6, dtype), RMSNorm(64, 1e-6, dtype))
        with torch.no_grad():
            for i, norm in enumerate(norms):
                norm.weight.copy_(1 + 0.1 * torch.randn(64, generator=torch.Generator().manual_seed(i)))
        want_q, want_k = norms[0].forward_native(want_q), norms[1].forward_native(want_k)
    backend = TritonPagedAttentionBackend()
    want_cache = case.cache.clone()
    rotary_embedding_(positions, want_q.view(n, -1), want_k.view(n, -1), rope.cos_sin_cache, 64)
    want = backend.forward(want_q, want_k, want_v, want_cache, md, 0.125)
    fused_norm = (norms[0].weight, norms[1].weight, 1e-6) if norms else None
    got = backend.forward(case.query, case.key, case.value, case.cache, md, 0.125,
                          QKVPrologue(positions, rope.cos_sin_cache, fused_norm, scale))
    assert torch.equal(case.cache.isnan(), want_cache.isnan())  # the padded row's slot stays poisoned
    got, want = got[:n - 1], want[:n - 1]  # the padded row reads its own unwritten (poisoned) slot
    if qk_norm or norm_scale or ON_GPU:
        assert_close_rel(got, want, dtype)
        assert_close_rel(case.cache.nan_to_num(), want_cache.nan_to_num(), dtype)
    else:
        assert torch.equal(got, want)
        assert torch.equal(case.cache.nan_to_num(), want_cache.nan_to_num())


def test_mixed_step_with_norm_scale_scales_qkv_first():
    """A step with prompt tokens takes the norm scale (input norm folded into qkv) as an in-place
    scaling of q, k and v before the rotary + cache write: the same as scaling them first."""
    from pagedllm.kernels.triton.norm_scale import scale_rows_by_inv_rms_
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    dtype = torch.bfloat16
    case = make_case([0, 9, 4], [6, 1, 12], 8, 2, 64, 16, dtype, seed=17)
    md = case.metadata
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip([0, 9, 4], [6, 1, 12])]).to(DEVICE)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    h = (torch.randn(19, 96, generator=torch.Generator().manual_seed(2)) * 3).to(DEVICE, dtype)
    backend = TritonPagedAttentionBackend()
    want_q, want_k, want_v = (scale_rows_by_inv_rms_(x.clone(), h, 1e-5)
                              for x in (case.query, case.key, case.value))
    want_cache = case.cache.clone()
    want = backend.forward(want_q, want_k, want_v, want_cache, md, 0.125, QKVPrologue(positions, rope.cos_sin_cache))
    got = backend.forward(case.query, case.key, case.value, case.cache, md, 0.125,
                          QKVPrologue(positions, rope.cos_sin_cache, norm_scale=(h, 1e-5)))
    assert torch.equal(got, want)
    assert torch.equal(case.cache.nan_to_num(), want_cache.nan_to_num())


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_layer_with_qk_norm_fused_or_not(dtype, monkeypatch):
    """The attention layer hands Qwen3's q/k norms to a backend that fuses them into its rotary +
    cache-write kernel (its capabilities, read when the layer is built), and applies them itself
    for one that does not: both ways agree."""
    from pagedllm.attention.forward_context import ForwardContext, set_forward_context
    from pagedllm.attention.torch_ref import TorchAttentionBackend
    from pagedllm.layers.attention import Attention
    from pagedllm.layers.layer_kernels import LayerKernels, OpImpl, use_layer_kernels
    from pagedllm.layers.norm import RMSNorm
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    case = make_case([0, 9, 30, 4], [6, 1, 1, 12], 8, 2, 64, 16, dtype, seed=12)
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip([0, 9, 30, 4], [6, 1, 1, 12])]).to(DEVICE)
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    with torch.device(DEVICE):  # built on the device: its platform's kernels
        norms = (RMSNorm(64, 1e-6, dtype), RMSNorm(64, 1e-6, dtype))
    with torch.no_grad():
        for i, norm in enumerate(norms):
            norm.weight.copy_(1 + 0.1 * torch.randn(64, generator=torch.Generator().manual_seed(i)))
    fused, plain = TritonPagedAttentionBackend(), TorchAttentionBackend()
    calls = []
    original = fused.forward
    monkeypatch.setattr(fused, "forward", lambda *a, **kw: calls.append(a) or original(*a, **kw))
    outs = []
    for backend in (fused, plain):
        kernels = LayerKernels(ops=OpImpl.TORCH, linear_method=None, attention=backend.capabilities)
        with use_layer_kernels(kernels):  # type: ignore[arg-type]
            layer = Attention(8, 64, 2, 0.125, 0, rotary_dim=64)
        assert layer.plan.fuse_qk_norm == (backend is fused)
        cache = case.cache.clone()
        q, k, v = (t.reshape(t.shape[0], -1).clone() for t in (case.query, case.key, case.value))
        with torch.no_grad(), set_forward_context(ForwardContext(case.metadata, [cache], backend)):
            outs.append(layer(q, k, v, rotary=(positions, rope), qk_norm=norms))
    prologue = calls[0][-1]
    assert len(calls) == 1 and prologue.qk_norm[0] is norms[0].weight  # the norms went into the kernel
    assert_close_rel(outs[0], outs[1], dtype)


@pytest.mark.skipif(not ON_GPU, reason="larger shapes need a GPU")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_llama_shapes(dtype):
    """Llama-3-8B heads (32 q / 8 kv, head 128): decode with auto split-K, and a mixed step."""
    rng = random.Random(7)
    contexts = [rng.randrange(1, 3000) for _ in range(24)]
    check(make_case(contexts, [1] * 24, 32, 8, 128, 16, dtype, seed=7), dtype)
    case = make_case([4000], [1], 32, 8, 128, 16, dtype, seed=8)
    backend = TritonPagedAttentionBackend()
    assert backend.num_splits(case.metadata, 1, 8) > 1
    want, _ = reference(case, 0.088)
    assert_close_rel(backend.forward(case.query, case.key, case.value, case.cache, case.metadata, 0.088), want, dtype)
    check(make_case([0, 300, 1000, 50, 7], [512, 128, 1, 1, 200], 32, 8, 128, 16, dtype, seed=9), dtype)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_gpu_decode_graph_replays_for_new_lengths():
    """Capture one decode step, then replay it with longer contexts: same as eager."""
    dtype, num_reqs = torch.bfloat16, 4
    case = make_case([700, 10, 2000, 0], [1] * num_reqs, 32, 8, 128, 16, dtype, seed=10)
    md = case.metadata
    backend = TritonPagedAttentionBackend(AttentionBackendOptions(max_num_seqs=8, max_model_len=4096))
    backend.forward(case.query, case.key, case.value, case.cache, md, 0.1)  # allocates the workspace
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = backend.forward(case.query, case.key, case.value, case.cache, md, 0.1)
    # Next step: every request one token longer, written at its next slot.
    for i in range(num_reqs):
        pos = md.seq_lens_cpu[i]
        md.seq_lens[i] = pos + 1
        md.slot_mapping[i] = int(md.block_table[i, pos // 16]) * 16 + pos % 16
    case.query.copy_(torch.randn_like(case.query))
    graph.replay()
    torch.cuda.synchronize()
    md.seq_lens_cpu = [s + 1 for s in md.seq_lens_cpu]
    md.max_seq_len += 1
    eager = TritonPagedAttentionBackend().forward(case.query, case.key, case.value, case.cache.clone(), md, 0.1)
    assert_close_rel(out, eager, dtype)  # split counts differ (capture used max_model_len)


@pytest.mark.skipif(not ON_GPU, reason="PDL needs a GPU")
def test_gpu_decode_attention_in_a_pdl_chain_equals_plain_launches():
    """A skinny GEMM writes q, decode attention (launched as its programmatic dependent, letting
    the next launch at once) reads it, a skinny GEMM reads attention's output: captured in a graph
    and replayed, the same bits as with every launch plain."""
    from pagedllm.kernels.triton.skinny_gemm import pick_config, skinny_gemm

    dtype, heads, kv_heads, head_size = torch.bfloat16, 32, 8, 128
    case = make_case([700], [1], heads, kv_heads, head_size, 16, dtype, seed=11)
    md = case.metadata
    reshape_and_cache(case.key, case.value, case.cache, md.slot_mapping, md.num_actual_tokens)
    gen = torch.Generator().manual_seed(11)
    hidden = heads * head_size
    w_q = (torch.randn(hidden, hidden, generator=gen) / hidden**0.5).to(DEVICE, dtype)
    w_o = (torch.randn(hidden, hidden, generator=gen) / hidden**0.5).to(DEVICE, dtype)
    x = torch.randn(1, hidden, generator=gen).to(DEVICE, dtype)
    cfg = pick_config(hidden, hidden, False, torch.cuda.get_device_properties(0).multi_processor_count)
    workspace = SplitWorkspace.allocate(8, heads, head_size, torch.device(DEVICE))
    results = {}
    for pdl in (False, True):
        q = torch.empty(1, hidden, dtype=dtype, device=DEVICE)
        attn = torch.empty(1, heads, head_size, dtype=dtype, device=DEVICE)
        out = torch.zeros(1, hidden, dtype=dtype, device=DEVICE)

        def chain(q=q, attn=attn, out=out, pdl=pdl) -> None:
            skinny_gemm(x, w_q, cfg, out=q, pdl=pdl)
            paged_attention(attn, q.view(1, heads, head_size), case.cache, md.block_table, md.seq_lens,
                            md.query_start_loc, 1, 1, 0.088, True, 8, workspace, pdl=pdl)
            skinny_gemm(attn.view(1, hidden), w_o, cfg, out=out, accumulate=True, pdl=pdl)

        chain()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            chain()
        out.zero_()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        results[pdl] = out.clone()
    assert torch.equal(results[True], results[False])
    assert not workspace.counters.any()


FP8 = torch.float8_e4m3fn


def _fp8_case(num_cached: list[int], num_new: list[int], seed: int) -> Case:
    """A bf16 step over an fp8 (e4m3) cache: cached values spread wide (some past 448 saturate
    when the new ones are written)."""
    case = make_case(num_cached, num_new, 8, 2, 64, 16, torch.bfloat16, seed=seed)
    case.cache = (case.cache.float() * 40).to(FP8)
    case.key = (case.key.float() * 300).to(torch.bfloat16)  # some past e4m3's 448
    return case


@pytest.mark.parametrize("num_cached,num_new,splits", [([40, 2, 17, 90], [1, 1, 1, 1], 1),
                                                       ([40, 2, 17, 90], [1, 1, 1, 1], 3),
                                                       ([0, 9, 30], [6, 1, 12], 1)])
def test_fp8_kv_cache_write_and_attention_match_the_torch_reference(num_cached, num_new, splits):
    """kv_cache_dtype="fp8": the kernels store K/V saturated to e4m3 and attend over them widened,
    as the torch backend does with the same cache (its float32 math the reference)."""
    from pagedllm.attention.torch_ref import as_cached

    case = _fp8_case(num_cached, num_new, seed=len(num_new) + splits)
    scale = 0.125
    ref_cache = case.cache.clone()
    want = TorchAttentionBackend().forward(case.query.float(), case.key.float(), case.value.float(), ref_cache,
                                           case.metadata, scale)
    got = run_kernel(case, scale, splits)
    assert_close_rel(got, want, torch.bfloat16)
    assert torch.equal(case.cache.float().nan_to_num(), ref_cache.float().nan_to_num())
    slots = case.metadata.slot_mapping.long().cpu()
    written = case.cache[0].reshape(-1, 2, 64)[slots.to(DEVICE)].float().cpu()
    assert torch.equal(written, as_cached(case.key.cpu(), FP8).float())
    assert written.abs().max().item() == 448.0  # saturated, not NaN


@pytest.mark.parametrize("decode", [True, False])
def test_fp8_kv_cache_through_the_rotary_prologue(decode):
    """The fused writers (rotary + cache write, and the decode kernel's own write) store into an
    fp8 cache what rotary, then the plain cache write, stores."""
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    cached, new = ([0, 9, 30, 63], [1, 1, 1, 1]) if decode else ([0, 9, 30], [6, 1, 12])
    case = _fp8_case(cached, new, seed=21)
    md = case.metadata
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip(cached, new)]).to(DEVICE)
    with torch.device(DEVICE):
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    backend = TritonPagedAttentionBackend()
    want_q, want_k, want_cache = case.query.clone(), case.key.clone(), case.cache.clone()
    rotary_embedding_(positions, want_q.view(len(positions), -1), want_k.view(len(positions), -1),
                      rope.cos_sin_cache, 64)
    want = backend.forward(want_q, want_k, case.value, want_cache, md, 0.125)
    got = backend.forward(case.query, case.key, case.value, case.cache, md, 0.125,
                          QKVPrologue(positions, rope.cos_sin_cache))
    assert_close_rel(got, want, torch.bfloat16)
    differ = (case.cache.float().nan_to_num() != want_cache.float().nan_to_num()).float().mean().item()
    assert differ < 0.01  # the same rounding but where the rotation's float32 products round apart


@pytest.mark.parametrize("decode", [True, False])
def test_fp8_kv_cache_with_a_checkpoints_scales(decode):
    """Calibrated K/V scales (k 2.5, v 0.25): every writer stores K / k_scale and V / v_scale, and
    attention reads them back through the softmax scale and the output, as the torch backend does."""
    from pagedllm.attention.torch_ref import as_cached
    from pagedllm.layers.rotary import RopeConfig, RotaryEmbedding

    scales = (2.5, 0.25)
    cached, new = ([0, 9, 30, 63], [1, 1, 1, 1]) if decode else ([0, 9, 30], [6, 1, 12])
    case = _fp8_case(cached, new, seed=31)
    md = case.metadata
    ref_cache = case.cache.clone()
    want = TorchAttentionBackend().forward(case.query.float(), case.key.float(), case.value.float(), ref_cache, md,
                                           0.125, kv_scales=scales)
    backend = TritonPagedAttentionBackend()
    plain_cache = case.cache.clone()
    got = backend.forward(case.query, case.key, case.value, plain_cache, md, 0.125, kv_scales=scales)
    assert_close_rel(got, want, torch.bfloat16)
    assert torch.equal(plain_cache.float().nan_to_num(), ref_cache.float().nan_to_num())
    slots = md.slot_mapping.long()
    written = plain_cache[1].reshape(-1, 2, 64)[slots].float().cpu()
    assert torch.equal(written, as_cached(case.value.cpu().float() * (1 / scales[1]), FP8).float())
    # the rotary prologue's writers (the decode kernel's own, or rotary + cache write) agree
    positions = torch.cat([torch.arange(c, c + n) for c, n in zip(cached, new)]).to(DEVICE)
    with torch.device(DEVICE):
        rope = RotaryEmbedding(64, 64, 256, RopeConfig(theta=10000.0, rope_type="default", params={}))
    want_q, want_k, want_cache = case.query.clone(), case.key.clone(), case.cache.clone()
    rotary_embedding_(positions, want_q.view(len(positions), -1), want_k.view(len(positions), -1),
                      rope.cos_sin_cache, 64)
    want = backend.forward(want_q, want_k, case.value, want_cache, md, 0.125, kv_scales=scales)
    got = backend.forward(case.query, case.key, case.value, case.cache, md, 0.125,
                          QKVPrologue(positions, rope.cos_sin_cache), kv_scales=scales)
    assert_close_rel(got, want, torch.bfloat16)
    differ = (case.cache.float().nan_to_num() != want_cache.float().nan_to_num()).float().mean().item()
    assert differ < 0.01
