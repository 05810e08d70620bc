"""The quantized linear methods as the engine builds them (issue 22), on Llama-3-8B's projections:
bf16 (the skinny GEMM / cuBLAS), FP8 (quantized at load: fp8 weights through the skinny GEMM for
at most 16 rows, W8A8 above) and INT4 (AWQ, group 128: int4 tiles in the skinny GEMM, the
dequantizing GEMM above), at several step sizes. Each case runs 8 copies of the layer back to
back in one CUDA graph, so every weight read is cold (8 copies exceed L2), and reports us per
call, the weight bytes streamed per second and the speed-up over bf16.

    python benchmarks/gpu/bench_quant_gemm.py [--rows 1 16 64 512 4096]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.gpu.bench_triton_kernels import capture_graph  # noqa: E402
from benchmarks.gpu.ceilings import back_to_back_ms  # noqa: E402
from pagedllm.config import KernelConfig  # noqa: E402
from pagedllm.kernels import quant_reference as ref  # noqa: E402
from pagedllm.layers.activation import SiluAndMul  # noqa: E402
from pagedllm.layers.layer_kernels import use_layer_kernels  # noqa: E402
from pagedllm.layers.linear import Linear  # noqa: E402
from pagedllm.platforms.base import get_platform  # noqa: E402
from pagedllm.quantization.fp8 import Fp8Config  # noqa: E402
from pagedllm.quantization.int4 import AwqConfig  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 2 * 14336), "down": (14336, 4096)}
COPIES = 8
METHODS = ("bf16", "fp8", "int4")


def _layer(method: str, k: int, n: int, gated: bool) -> Linear:
    kernels = get_platform("cuda").layer_kernels(KernelConfig())
    if method == "fp8":
        kernels = dataclasses.replace(kernels, quant_config=Fp8Config.online())
    elif method == "int4":
        kernels = dataclasses.replace(kernels, quant_config=AwqConfig(group_size=128))
    with torch.device("cuda"), use_layer_kernels(kernels):
        layer = Linear(k, n, bias=False, dtype=torch.bfloat16, gated=gated, prefix="model.layers.0.mlp.proj")
    w = torch.randn(n, k, device="cuda") * 0.02
    if method == "int4":
        q, s, z = ref.quantize_int4(w.t(), 128)
        layer.load_hf_weight("qweight", ref.pack_int4_cols(q, awq_order=True))
        layer.load_hf_weight("qzeros", ref.pack_int4_cols(z, awq_order=True))
        layer.load_hf_weight("scales", s.to(torch.float16))
    else:
        layer.load_hf_weight("weight", w.to(torch.bfloat16))
    layer.process_weights_after_loading()
    return layer


def _weight_bytes(layer: Linear) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def bench(rows: list[int]) -> None:
    act = SiluAndMul()
    print(f"{'proj':<8}{'rows':>6}" + "".join(f"{m + ' us':>11}{m + ' TB/s':>11}" for m in METHODS)
          + f"{'fp8 x':>8}{'int4 x':>8}")
    for name, (k, n) in SHAPES.items():
        gated = name == "gate_up"
        layers = {m: [_layer(m, k, n, gated) for _ in range(COPIES)] for m in METHODS}
        for m_rows in rows:
            x = torch.randn(m_rows, k, device="cuda", dtype=torch.bfloat16)
            residual = torch.zeros(m_rows, n, device="cuda", dtype=torch.bfloat16)
            times = {}
            for method, ls in layers.items():
                if gated:
                    fns = [lambda layer=layer: layer.forward_gated(x, lambda t, s: act(t)) for layer in ls]
                elif name in ("o", "down"):
                    fns = [lambda layer=layer: layer.accumulate_(residual, x) for layer in ls]
                else:
                    fns = [lambda layer=layer: layer(x) for layer in ls]
                graph = capture_graph(fns)
                times[method] = 1e3 * back_to_back_ms(graph.replay, 20) / COPIES
            line = f"{name:<8}{m_rows:>6}"
            for method in METHODS:
                tbs = _weight_bytes(layers[method][0]) / (times[method] * 1e-6) / 1e12
                line += f"{times[method]:>11.1f}{tbs:>11.2f}"
            print(line + f"{times['bf16'] / times['fp8']:>8.2f}{times['bf16'] / times['int4']:>8.2f}", flush=True)
        del layers
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 512, 4096])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    bench(args.rows)


if __name__ == "__main__":
    main()
