"""The quantized-weight CPU kernels (kernels/cpu/quant.py) against gguf-py and a float64 reference.

Weights: for the types gguf-py can quantize (the legacy ones), random float tensors quantized by
it; for the K-quants (it has no quantizer for them), valid random blocks built directly. gguf-py's
`dequantize` of the same bytes is the reference: ours must equal it bit for bit, and `linear` must
be within the error bound of its int8 activations (see `_error_bound`) of float64 dequant(W) @ x.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import gguf
import numpy as np
import pytest
import torch

from pagedllm.kernels.cpu import load_cpu_kernels, quant

T = gguf.GGMLQuantizationType
TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
ISAS = ["avx512vnni", "avx2", "scalar"]
N = 45  # weight rows: two full panels of 16 and a partial one


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    if load_cpu_kernels() is None:
        pytest.skip("the C++ CPU kernels cannot be built on this machine")


@contextlib.contextmanager
def isa(name: str) -> Iterator[None]:
    if name not in quant.isas():
        pytest.skip(f"{name} is not available in this build on this CPU")
    previous = quant.set_isa(name)
    try:
        yield
    finally:
        quant.set_isa(previous)


def _random_k_blocks(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid random blocks of a K-quant: random quant and scale bytes, fp16 d (and dmin) of a
    sensible magnitude at their offsets (ggml-common.h's block_q*_K)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, type_size), dtype=np.uint8)
    d_at = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    for at in d_at:
        d = (rng.uniform(0.5, 1.5, size=blocks.shape[0]) * 2e-3).astype(np.float16)
        blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // block_size * type_size)


def make_raw(qtype: T, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """uint8 [rows, row_bytes] GGUF blocks of this type."""
    rng = np.random.default_rng(seed + int(qtype))
    if gguf.GGML_QUANT_SIZES[qtype][0] == 256:
        return _random_k_blocks(qtype, rows, cols, rng)
    return gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32) * 0.05, qtype)


def _packed(qtype: T, rows: int, cols: int, seed: int = 0) -> tuple[quant.PackedWeight, np.ndarray]:
    raw = make_raw(qtype, rows, cols, seed)
    return quant.repack(torch.from_numpy(raw), int(qtype), rows, cols), gguf.quants.dequantize(raw, qtype)


def _cols(qtype: T) -> int:
    return 768 if gguf.GGML_QUANT_SIZES[qtype][0] == 256 else 64


def _error_bound(w: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """|out - dequant(W) @ x| <= sum over blocks of 32 of (amax_b / 127 / 2) * sum_b |W|: each
    activation is rounded to a multiple of its block's step amax / 127, so is off by at most half
    a step; the kernel's integer sums are exact. Plus 1e-5 of |W| @ |x| for float32 rounding."""
    xb = x.double().numpy().reshape(x.shape[0], -1, 32)
    half_step = np.abs(xb).max(axis=2) / 127 / 2  # [M, K / 32]
    wb = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1, 32).sum(axis=2)  # [N, K / 32]
    return 1.01 * half_step @ wb.T + 1e-5 * np.abs(x.double().numpy()) @ np.abs(w.astype(np.float64)).T


def _check_linear(out: torch.Tensor, w: np.ndarray, x: torch.Tensor) -> None:
    ref = x.double().numpy() @ w.astype(np.float64).T
    err = np.abs(out.double().numpy() - ref)
    bound = _error_bound(w, x)
    assert (err <= bound).all(), f"max error {err.max():.3g}, at {np.unravel_index((err - bound).argmax(), err.shape)}"
    # and as a norm: int8 activations cost a few 1e-3 of the output
    assert np.linalg.norm(err) <= 1e-2 * np.linalg.norm(ref)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_dequantize_is_bit_equal_to_gguf(qtype):
    cols = _cols(qtype)
    w, ref = _packed(qtype, N, cols)
    assert w.data.numel() == 3 * 16 * cols // gguf.GGML_QUANT_SIZES[qtype][0] * gguf.GGML_QUANT_SIZES[qtype][1]
    got = quant.dequantize(w)
    assert got.shape == (N, cols) and got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32), torch.from_numpy(ref).view(torch.int32))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_embedding_gathers_dequantized_rows(qtype):
    w, ref = _packed(qtype, N, _cols(qtype))
    ids = torch.tensor([44, 0, 17, 17, 31, 32, 5])
    got = quant.embedding(ids, w)
    assert torch.equal(got.view(torch.int32), torch.from_numpy(ref[ids.numpy()]).view(torch.int32))
    with pytest.raises(RuntimeError, match="out of range"):
        quant.embedding(torch.tensor([N]), w)


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("M", [1, 3, 13, 64, 130])
def test_linear_matches_float64_reference(qtype, isa_name, M):
    cols = _cols(qtype)
    w, ref = _packed(qtype, N, cols)
    x = torch.randn(M, cols, generator=torch.Generator().manual_seed(M))
    with isa(isa_name):
        out = quant.linear(x, w)
    assert out.shape == (M, N)
    _check_linear(out, ref, x)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_isa_paths_are_bit_equal(qtype):
    cols = 2 * _cols(qtype)
    w, _ = _packed(qtype, N, cols, seed=1)
    x = torch.randn(21, cols, generator=torch.Generator().manual_seed(2)) * 3
    outs = {}
    for name in quant.isas():
        with isa(name):
            outs[name] = quant.linear(x, w)
    for name, out in outs.items():
        assert torch.equal(out, outs["scalar"]), name


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0, T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_rows_do_not_depend_on_the_batch(qtype, isa_name):
    """A row's output is the same bits at any M and at any place in the batch."""
    cols = _cols(qtype)
    w, _ = _packed(qtype, N, cols)
    x = torch.randn(130, cols, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(130, generator=torch.Generator().manual_seed(4))
    with isa(isa_name):
        full = quant.linear(x, w)
        for m in (1, 3, 13, 64):
            assert torch.equal(quant.linear(x[:m], w), full[:m]), m
        assert torch.equal(quant.linear(x[perm], w), full[perm])
        assert torch.equal(quant.linear(x[-1:], w), full[-1:])


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q5_1, T.Q5_K, T.Q3_K], ids=lambda t: t.name)
def test_bias_residual_and_strided_rows(qtype, isa_name):
    cols = _cols(qtype)
    w, _ = _packed(qtype, N, cols)
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(13, cols + 24, generator=gen)
    x = wide[:, 7:7 + cols]  # strided rows, contiguous columns
    bias = torch.randn(N, generator=gen)
    residual = torch.randn(13, N, generator=gen)
    with isa(isa_name):
        plain = quant.linear(x.contiguous(), w)
        assert torch.equal(quant.linear(x, w), plain)
        with_bias = quant.linear(x, w, bias)
        assert torch.equal(with_bias, plain + bias)
        expected = residual + (plain + bias)
        out = quant.linear(x, w, bias, residual=residual)
    assert out.data_ptr() == residual.data_ptr()
    assert torch.equal(residual, expected)


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K], ids=lambda t: t.name)
def test_wide_outputs_through_the_staging_buffer_keep_their_bits(qtype, isa_name):
    """An LM-head-wide output (8192+ columns, 8+ rows) is written through a per-thread buffer: the
    same bits as each row alone (written straight), with bias and residual, a ragged last panel."""
    cols, n = _cols(qtype), 8192 + 16 * 3 + 5
    w, _ = _packed(qtype, n, cols)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(9, cols, generator=gen)
    bias = torch.randn(n, generator=gen)
    residual = torch.randn(9, n, generator=gen)
    with isa(isa_name):
        rows = torch.cat([quant.linear(x[m:m + 1], w, bias) for m in range(9)])
        assert torch.equal(quant.linear(x, w, bias), rows)
        expected = residual + rows
        quant.linear(x, w, bias, residual=residual)
    assert torch.equal(residual, expected)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"not supported.*Q4_0"):
        quant.quant_type(int(T.IQ2_XXS))
    with pytest.raises(ValueError, match="multiple of 256"):
        quant.repack(torch.zeros(144, dtype=torch.uint8), int(T.Q4_K), 1, 320)
    w, _ = _packed(T.Q4_0, N, 64)
    with pytest.raises(RuntimeError, match="does not match"):
        quant.linear(torch.randn(2, 96), w)
    with pytest.raises(RuntimeError, match="unknown ISA"):
        quant.set_isa("sse9")
    assert quant.set_isa(quant.set_isa("scalar")) == "scalar"
    assert quant.current_isa() in quant.isas()


@pytest.fixture(scope="module")
def default_model_reader():  # type: ignore[no-untyped-def]
    from pagedllm.models.source import resolve_model_source

    try:
        source = resolve_model_source(None)
    except Exception as e:  # no default model here: nothing to test against
        pytest.skip(f"no default model: {e}")
    if source.gguf_file is None:
        pytest.skip("the default model is not a GGUF file")
    return gguf.GGUFReader(os.path.join(source.path, source.gguf_file))


def _tensor(reader, name: str):  # type: ignore[no-untyped-def]
    return next(t for t in reader.tensors if t.name == name)


@pytest.mark.parametrize("isa_name", ISAS)
def test_default_model_q4_1_layer(default_model_reader, isa_name):
    t = _tensor(default_model_reader, "blk.0.attn_k.weight")
    assert t.tensor_type == T.Q4_1
    raw = np.asarray(t.data)
    rows, cols = raw.shape[0], int(t.shape[0])  # gguf shapes are [cols, rows]
    w = quant.repack(torch.from_numpy(raw.copy()), int(t.tensor_type), rows, cols)
    ref = gguf.quants.dequantize(raw, t.tensor_type)
    assert torch.equal(quant.dequantize(w).view(torch.int32), torch.from_numpy(ref).view(torch.int32))
    x = torch.randn(7, cols, generator=torch.Generator().manual_seed(6))
    with isa(isa_name):
        _check_linear(quant.linear(x, w), ref, x)


def test_default_model_q8_0_embedding(default_model_reader):
    t = _tensor(default_model_reader, "token_embd.weight")
    assert t.tensor_type == T.Q8_0
    raw = np.asarray(t.data)
    rows, cols = raw.shape[0], int(t.shape[0])
    w = quant.repack(torch.from_numpy(raw.copy()), int(t.tensor_type), rows, cols)
    ids = torch.tensor([0, 1, 2, 1000, 30000, rows - 1])
    ref = gguf.quants.dequantize(raw[ids.numpy()], t.tensor_type)
    assert torch.equal(quant.embedding(ids, w).view(torch.int32), torch.from_numpy(ref).view(torch.int32))
    # the tied LM head: the same packed table as a linear layer
    x = torch.randn(2, cols, generator=torch.Generator().manual_seed(7))
    logits = quant.linear(x, w)
    rows_ref = gguf.quants.dequantize(raw[:4096], t.tensor_type)
    _check_linear(logits[:, :4096], rows_ref, x)


@pytest.mark.parametrize("isa_name", ISAS)
def test_non_finite_activations_give_nan_rows(isa_name):
    """An inf or NaN in a row of x makes that row's outputs NaN (as float32 would), not finite
    garbage from a saturated int8; the other rows are unaffected."""
    w, _ = _packed(T.Q4_1, N, 64)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(8))
    x[0, 5], x[2, 40] = float("nan"), float("inf")
    with isa(isa_name):
        out = quant.linear(x, w)
        assert out[0].isnan().all() and out[2].isnan().all()
        assert torch.equal(out[1:2], quant.linear(x[1:2], w))
