"""The Triton rejection rule (kernels/triton/rejection.py) against the torch reference
(spec_decode/rejection.py), under the interpreter on CPU tensors or compiled on a GPU."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pagedllm.kernels.triton.rejection import BLOCK, rejection_sample  # noqa: E402
from pagedllm.spec_decode.rejection import rejection_sample as reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("vocab", [300, 2 * BLOCK + 77])  # one block; three, the last one short
def test_kernel_equals_the_torch_reference(vocab):
    gen = torch.Generator().manual_seed(vocab)
    rows = 40
    p = torch.softmax(torch.randn(rows, vocab, generator=gen) * 2, -1)
    q = torch.softmax(torch.randn(rows, vocab, generator=gen) * 2, -1)
    p[3] = q[3]  # no residual: p itself is drawn from
    p[4].zero_()
    p[4, vocab - 1] = 1.0  # the only token of p is the last, of a short last block
    p[5, : vocab // 2] = 0.0  # half the vocabulary masked (top-k / top-p)
    p[5] /= p[5].sum()
    ids = torch.multinomial(q, 1, generator=gen).squeeze(1)
    ua, ur = torch.rand(rows, generator=gen), torch.rand(rows, generator=gen)
    ur[6] = 0.0
    want = reference(p.double(), q.double(), ids, ua.double(), ur.double())
    got = rejection_sample(*(t.to(DEVICE) for t in (p, q, ids, ua, ur)))
    assert torch.equal(got[0].cpu(), want[0])
    # the same token wherever the target is not within float32 rounding of a boundary
    residual = (p - q).clamp(min=0).double()
    residual[3] = p[3].double()
    cdf = residual.cumsum(-1)
    target = ur.double()[:, None] * cdf[:, -1:]
    near = ((cdf - target).abs() / cdf[:, -1:] < 1e-5).any(-1)
    same = got[1].cpu() == want[1]
    assert bool((same | near).all()), (got[1].cpu()[~same], want[1][~same])
    assert int(got[1][4]) == vocab - 1 and int(got[1][5]) >= vocab // 2


def test_the_verifier_gives_the_same_runs_with_the_kernel():
    from pagedllm.sample.sampler import Sampler
    from pagedllm.sample.sampling_metadata import SamplingRequest
    from pagedllm.sampling_params import SamplingParams
    from pagedllm.spec_decode.verifier import DraftVerifier

    gen = torch.Generator().manual_seed(1)
    vocab, n = 50, 24
    logits = torch.randn(3 * n, vocab, generator=gen).to(DEVICE)
    q = torch.softmax(torch.randn(2, vocab, generator=gen), -1).to(DEVICE)
    rows = [SamplingRequest(SamplingParams(temperature=0.9, seed=i), [1], [2], None) for i in range(n)]
    drafts = [torch.multinomial(q, 1, generator=None).squeeze(1).tolist() for _ in range(n)]
    kernel = DraftVerifier(Sampler(), rejection_sample).launch(logits, rows, drafts, [q] * n).result()
    torch_ref = DraftVerifier(Sampler()).launch(logits, rows, drafts, [q] * n).result()
    assert kernel.token_runs == torch_ref.token_runs
