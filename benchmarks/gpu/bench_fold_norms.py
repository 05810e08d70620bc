"""What folding the RMSNorm weights into the next projection saves at batch-1 decode, in a CUDA
graph of the Llama-3-8B shape's 32 layers (attention left out: the o projection reads q's columns
of the qkv output, so the chain of dependencies stays):

* unfolded (the engine until now): fused add + RMSNorm, qkv, o, add + RMSNorm, gate_up, SiLU-and-mul,
  down: seven launches a layer;
* folded: qkv on the residual itself, o accumulated into the residual by cuBLAS (beta = 1), gate_up
  on the residual, SiLU-and-mul scaling by 1 / rms(residual), down accumulated: five launches;
* folded, plain o/down (timing only, wrong numbers): what the in-place accumulation costs.

    python benchmarks/gpu/bench_fold_norms.py [--batches 1 4]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.kernels.triton.activation import silu_and_mul  # noqa: E402
from pagedllm.kernels.triton.rms_norm import rms_norm  # noqa: E402

HIDDEN, INTER, QKV, LAYERS, EPS = 4096, 14336, 6144, 32, 1e-5


def layer_weights() -> list[dict[str, torch.Tensor]]:
    """The 32 layers' random weights of the 8B shape (norm weights 1)."""
    def w(k: int, n: int) -> torch.Tensor:  # [in, out], as Linear keeps it
        return torch.randn(k, n, dtype=torch.bfloat16, device="cuda") / k**0.5
    return [{"qkv": w(HIDDEN, QKV), "o": w(HIDDEN, HIDDEN), "gate_up": w(HIDDEN, 2 * INTER),
             "down": w(INTER, HIDDEN), "n1": torch.ones(HIDDEN, dtype=torch.bfloat16, device="cuda"),
             "n2": torch.ones(HIDDEN, dtype=torch.bfloat16, device="cuda")} for _ in range(LAYERS)]


def unfolded(ws: list[dict[str, torch.Tensor]], x: torch.Tensor, r: torch.Tensor) -> None:
    for w in ws:
        h, r = rms_norm(x, w["n1"], EPS, r)
        attn = torch.matmul(h, w["qkv"])[:, :HIDDEN]
        x = torch.matmul(attn, w["o"])
        h, r = rms_norm(x, w["n2"], EPS, r)
        x = torch.matmul(silu_and_mul(torch.matmul(h, w["gate_up"])), w["down"])


def folded(ws: list[dict[str, torch.Tensor]], r: torch.Tensor, accumulate: bool = True) -> None:
    for w in ws:
        attn = torch.matmul(r, w["qkv"])[:, :HIDDEN]
        if accumulate:
            r.addmm_(attn, w["o"])
        else:
            torch.matmul(attn, w["o"], out=r)
        act = silu_and_mul(torch.matmul(r, w["gate_up"]), r, EPS)
        if accumulate:
            r.addmm_(act, w["down"])
        else:
            torch.matmul(act, w["down"], out=r)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    torch.manual_seed(0)
    ws = layer_weights()
    print(f"{torch.cuda.get_device_name()}: 32 layers of the 8B shape, ms per graph replay")
    for batch in args.batches:
        x = torch.randn(batch, HIDDEN, dtype=torch.bfloat16, device="cuda")
        r = torch.randn(batch, HIDDEN, dtype=torch.bfloat16, device="cuda")
        variants = {"unfolded": lambda: unfolded(ws, x, r), "folded": lambda: folded(ws, r),
                    "folded, plain o/down": lambda: folded(ws, r, accumulate=False)}
        graphs = {name: capture_graph([fn]) for name, fn in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in graphs}
        for _ in range(5):  # interleaved rounds
            for name, g in graphs.items():
                times[name].append(back_to_back_ms(g.replay, 20))
        for name, ts in times.items():
            ts.sort()
            print(f"batch {batch:3d}  {name:22s} median {ts[2]:.3f} ms  (min {ts[0]:.3f}, max {ts[-1]:.3f})")


if __name__ == "__main__":
    main()
