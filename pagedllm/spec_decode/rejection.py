"""The standard rejection rule for drafts sampled from a draft distribution q (Leviathan et al.,
Chen et al.): the token that comes out follows the target's p exactly, whatever q is.

    draft d ~ q        accept d with probability min(1, p(d) / q(d))
    rejected           the token comes from norm(max(0, p - q)) instead, and the run ends there

(When every draft of a run is accepted, the token after them is sampled from p itself: the
verifier's plain sample of that position.) A torch reference; drafts that are fixed tokens need
none of this (verifier.py checks them exactly).
"""
from __future__ import annotations

import torch


def rejection_sample(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_ids: torch.Tensor,
                     u_accept: torch.Tensor, u_recover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per drafted position: (accepted [R] bool, the token to take if rejected [R] int64).

    target_probs, draft_probs [R, V]: p and q at each drafted position; draft_ids [R]: the drafts
    (sampled from q); u_accept, u_recover [R]: independent uniforms in [0, 1)."""
    ids = draft_ids.unsqueeze(1)
    p = target_probs.gather(1, ids).squeeze(1)  # [R]
    q = draft_probs.gather(1, ids).squeeze(1)  # [R], > 0: d was drawn from q
    accepted = u_accept * q < p  # u < p / q without dividing; p >= q accepts always
    residual = (target_probs - draft_probs).clamp_(min=0.0)  # [R, V]
    # p == q leaves no residual; such a row always accepts, but give it p to keep the draw valid.
    total = residual.sum(dim=1, keepdim=True)
    residual = torch.where(total > 0, residual, target_probs)
    cdf = residual.cumsum(dim=1)  # [R, V]
    u = (u_recover * cdf[:, -1]).unsqueeze(1)
    recovered = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)
    return accepted, recovered
