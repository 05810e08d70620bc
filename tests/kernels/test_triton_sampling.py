"""The Triton inverse-CDF sampler (kernels/triton/sampling.py) against a float64 reference, under
the interpreter on CPU tensors or compiled on a GPU, and the sampler's use of it."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.sampling import CHUNK, sample_from_logits  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _reference(logits: torch.Tensor, u: torch.Tensor, temperature: float | None):
    scaled = logits.double() / (temperature or 1.0)
    w = (scaled - scaled.amax(-1, keepdim=True)).exp()
    cdf = w.cumsum(-1)
    target = u.double()[:, None] * cdf[:, -1:]
    want = torch.searchsorted(cdf, target, right=True).squeeze(1)
    near = ((cdf - target).abs() / cdf[:, -1:] < 1e-5).any(-1)  # within float32 rounding of a boundary
    return want, near


@pytest.mark.parametrize("temperature", [None, 0.7])  # None: logits already scaled
@pytest.mark.parametrize("vocab", [1000, 2 * CHUNK + 700])  # one chunk; three, the last one short
def test_sample_from_logits_inverts_the_cdf(temperature, vocab):
    """The same token as the float64 inverse CDF wherever the target is not within float32
    rounding of a boundary; masked (-inf) tokens never picked, whichever chunk they are in."""
    gen = torch.Generator().manual_seed(vocab)
    rows = 48
    logits = torch.randn(rows, vocab, generator=gen) * 3
    logits[:, vocab // 2:] = float("-inf")  # a truncated tail: whole chunks masked in the long rows
    logits[3, :] = float("-inf")
    logits[3, 7] = 0.0  # one allowed token
    logits[4, :] = float("-inf")  # nothing allowed: token 0, as the CPU stage gives
    logits[6, :-1] = float("-inf")
    logits[6, -1] = 1.0  # the only allowed token is the last of a short last chunk
    u = torch.rand(rows, generator=gen)
    u[5] = 0.0
    u[7] = 1.0 - 2.0 ** -24  # the largest float below 1: u * total may round to total
    inv_t = None if temperature is None else torch.full((rows,), 1 / temperature)
    got = sample_from_logits(logits.to(DEVICE), u.to(DEVICE), None if inv_t is None else inv_t.to(DEVICE)).cpu()
    want, near = _reference(logits, u, temperature)
    allowed = logits[torch.arange(rows), got] > float("-inf")
    allowed[4] = True
    assert allowed.all() and got[3] == 7 and got[4] == 0 and got[6] == vocab - 1
    assert got[5] == want[5]  # u = 0: the first token of positive weight
    check = ~near
    check[4] = False
    assert torch.equal(got[check], want[check])


def test_sample_from_logits_on_strided_rows():
    """Rows of a wider buffer (logits of the sampled rows may be a view)."""
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(6, 3000, generator=gen) * 2
    logits = wide[:, :2900]
    u = torch.rand(6, generator=gen)
    got = sample_from_logits(logits.to(DEVICE), u.to(DEVICE)).cpu()
    want, near = _reference(logits, u, None)
    assert torch.equal(got[~near], want[~near])


def test_sampler_takes_the_triton_stage_and_keeps_the_distribution():
    """With the Triton stage (the CUDA platform's choice unless KernelConfig.triton_sampler is off),
    the sampler's random rows follow softmax(logits / T), with and without top-k (the truncated
    path divides first and hands the stage scaled logits)."""
    from pagedllm.config import KernelConfig
    from pagedllm.kernels.triton.sampling import sample_from_logits
    from pagedllm.platforms.cuda import CudaPlatform
    from pagedllm.sample.sampler import Sampler
    from pagedllm.sample.sampling_metadata import SamplingRequest, make_sampling_metadata
    from pagedllm.sampling_params import SamplingParams

    assert CudaPlatform().inverse_cdf_stage(KernelConfig()) is sample_from_logits
    assert CudaPlatform().inverse_cdf_stage(KernelConfig(triton_sampler=False)) is None
    assert CudaPlatform().inverse_cdf_stage(KernelConfig(triton=False)) is None
    calls = []

    def stage(*args: torch.Tensor) -> torch.Tensor:
        calls.append(len(args))
        return sample_from_logits(*args)

    vocab, rows = 6, 1500
    base = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0, float("-inf")])
    sampler = Sampler(torch.Generator(device=DEVICE).manual_seed(0), inverse_cdf=stage)
    for params, expect_probs in (
        (dict(temperature=0.8), torch.softmax(base / 0.8, -1)),
        (dict(temperature=0.8, top_k=3), torch.softmax(torch.cat([base[:3] / 0.8, torch.full((3,), -1e9)]), -1)),
    ):
        reqs = [SamplingRequest(SamplingParams(**params), [1], [], None) for _ in range(rows)]
        md = make_sampling_metadata(reqs, vocab, torch.device(DEVICE))
        tokens = sampler.sample(base.expand(rows, vocab).contiguous().to(DEVICE), md).cpu()
        freq = torch.bincount(tokens, minlength=vocab).double() / rows
        assert freq[5] == 0  # masked
        assert (freq - expect_probs.double()).abs().max() < 0.04, (freq, expect_probs)
    assert calls == [3, 2]  # the temperature fused in, then the truncated path's scaled logits
