"""Quantized checkpoints made from a tiny HF model, in the formats vLLM and HF write, and the HF
model with the same weights dequantized (the oracle a quantized load must match).

Quantization is our reference quantizer's (pagedllm.kernels.quant_reference); what is checked is
that a checkpoint in each published layout loads and computes what its numbers mean."""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import save_file

from pagedllm.kernels import quant_reference as ref
from tests.helpers.tiny_models import TinyModel

# decoder projections quantized; embeddings, norms and the LM head stay as they are
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj")  # the last four: latent attention
FP8_SCHEMES = ("tensor", "channel", "block", "static")
FP8_BLOCK = (32, 32)  # the tiny models' dimensions are multiples of 32
INT4_FORMATS = ("awq", "gptq")
INT4_GROUP = 32


def _is_projection(name: str) -> bool:
    return name.endswith(".weight") and name.split(".")[-2] in _PROJECTIONS


def _fp8_tensors(name: str, w: torch.Tensor, scheme: str,
                 block: tuple[int, int] = FP8_BLOCK) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A weight's checkpoint tensors in `scheme`, and the real weight they stand for."""
    layer = name[: -len(".weight")]
    if scheme == "block":
        q, scale = ref.quantize_fp8_weight(w, block)
        return {name: q, f"{layer}.weight_scale_inv": scale}, ref.dequantize_fp8(q, scale, block)
    if scheme == "channel":
        q, scale = ref.quantize_fp8_weight(w)
        return {name: q, f"{layer}.weight_scale": scale.view(-1, 1)}, ref.dequantize_fp8(q, scale)
    scale = (w.abs().max() / ref.FP8_MAX).reshape(())
    q = (w / scale).clamp(-ref.FP8_MAX, ref.FP8_MAX).to(ref.FP8_DTYPE)
    out = {name: q, f"{layer}.weight_scale": scale.float()}
    if scheme == "static":
        out[f"{layer}.input_scale"] = torch.tensor(0.02, dtype=torch.float32)
    return out, q.float() * scale


def _int4_tensors(name: str, w: torch.Tensor, fmt: str, group: int = INT4_GROUP,
                  act_order: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """AWQ's or GPTQ's tensors of a weight [out, in], and the real weight they stand for. GPTQ
    with act_order groups the input features in a permuted order (desc_act=true): g_idx says
    each feature's group, and the rows stay in the features' own order."""
    layer = name[: -len(".weight")]
    w_t = w.t()  # [in, out]
    k = w_t.shape[0]
    order = torch.randperm(k, generator=torch.Generator().manual_seed(k)) if act_order else torch.arange(k)
    q_sorted, scale, zero = ref.quantize_int4(w_t[order], group)  # groups of consecutive features in `order`
    scales = scale.to(torch.float16)
    q = torch.empty_like(q_sorted)
    q[order] = q_sorted
    g_idx = torch.empty(k, dtype=torch.int32)
    g_idx[order] = torch.arange(k, dtype=torch.int32) // group
    stored_zero = zero if fmt == "awq" else (zero.to(torch.int16) - 1).clamp(0, 15).add(1).to(torch.uint8)
    real = (q.float() - stored_zero.float()[g_idx.long()]) * scales.float()[g_idx.long()]
    if fmt == "awq":
        out = {"qweight": ref.pack_int4_cols(q, awq_order=True), "qzeros": ref.pack_int4_cols(zero, awq_order=True)}
    else:  # GPTQ v1: rows packed, zeros stored minus one, each input feature's group in g_idx
        out = {"qweight": ref.pack_int4_rows(q), "qzeros": ref.pack_int4_cols((zero.to(torch.int16) - 1).clamp(0, 15)),
               "g_idx": g_idx}
    out["scales"] = scales
    return {f"{layer}.{key}": v for key, v in out.items()}, real.t()


def _write(tiny: TinyModel, folder: str, convert: Any, quantization_config: dict[str, Any]) -> Any:
    """tiny's checkpoint with its projections converted by convert(name, weight) -> (tensors,
    real weight) and quantization_config in its config; returns HF's model of the real weights
    (loaded by from_pretrained from a folder beside `folder`: HF's own loading maps per-expert
    tensors onto its fused experts)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    real_folder = folder.rstrip("/") + "_dequantized"
    for out in (folder, real_folder):
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(tiny.folder):
            if not name.endswith(".safetensors") and name != "model.safetensors.index.json":
                shutil.copy(os.path.join(tiny.folder, name), out)
    state: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(tiny.folder)):
        if name.endswith(".safetensors"):
            state.update(load_file(os.path.join(tiny.folder, name)))
    saved: dict[str, torch.Tensor] = {}
    dequantized = dict(state)
    for name, w in state.items():
        if not _is_projection(name):
            saved[name] = w
            continue
        tensors, real = convert(name, w)
        saved.update(tensors)
        dequantized[name] = real.to(w.dtype).contiguous()
    save_file(saved, os.path.join(folder, "model.safetensors"))
    save_file(dequantized, os.path.join(real_folder, "model.safetensors"))
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["quantization_config"] = quantization_config
    with open(config_path, "w") as f:
        json.dump(config, f)
    return AutoModelForCausalLM.from_pretrained(real_folder, dtype=torch.float32).eval()


def write_int4_checkpoint(tiny: TinyModel, folder: str, fmt: str, group: int = INT4_GROUP,
                          act_order: bool = False) -> Any:
    """tiny's weights as an AWQ (GEMM) or GPTQ (asymmetric; desc_act as act_order) checkpoint of
    4-bit groups of `group` inputs; returns the HF model with the dequantized weights."""
    assert fmt in INT4_FORMATS and not (act_order and fmt == "awq")
    if fmt == "awq":
        qc = {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": group, "zero_point": True}
    else:
        qc = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order, "sym": False}
    return _write(tiny, folder, lambda name, w: _int4_tensors(name, w, fmt, group, act_order), qc)


def write_fp8_checkpoint(tiny: TinyModel, folder: str, scheme: str, block: tuple[int, int] = FP8_BLOCK) -> Any:
    """tiny's weights as an FP8 checkpoint in `folder` (quant_method "fp8": per-tensor, per-channel,
    128-style block scales, or per-tensor with static input scales); returns the HF model with
    the dequantized weights."""
    assert scheme in FP8_SCHEMES
    qc: dict[str, Any] = {"quant_method": "fp8", "activation_scheme": "static" if scheme == "static" else "dynamic",
                          "ignored_layers": ["lm_head"]}
    if scheme == "block":
        qc["weight_block_size"] = list(block)
    return _write(tiny, folder, lambda name, w: _fp8_tensors(name, w, scheme, block), qc)


CT_SCHEMES = ("w4a16", "w4a16-asym", "fp8-dynamic", "fp8-block")


def _ct_scheme(kind: str) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if kind.startswith("w4a16"):
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=kind == "w4a16", strategy="group",
                                   group_size=INT4_GROUP)
        return QuantizationScheme(targets=["Linear"], weights=weights)
    block = kind == "fp8-block"
    weights = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="block" if block else "channel",
                               block_structure=list(FP8_BLOCK) if block else None)
    acts = QuantizationArgs(num_bits=8, type="float", symmetric=True, dynamic=True,
                            strategy="group" if block else "token", group_size=FP8_BLOCK[1] if block else None)
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=acts)


def _ct_tensors(name: str, w: torch.Tensor, kind: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """compressed-tensors' own quantization parameters, compression and decompression of a weight
    (the library is the oracle of its format)."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = _ct_scheme(kind)
    args = scheme.weights
    if kind.startswith("w4a16"):
        groups = w.reshape(w.shape[0], -1, INT4_GROUP)
        scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        fmt = "pack-quantized"
    elif kind == "fp8-block":
        bn, bk = FP8_BLOCK
        tiles = w.reshape(w.shape[0] // bn, bn, w.shape[1] // bk, bk)
        scale, zp = calculate_qparams(tiles.amin((1, 3)), tiles.amax((1, 3)), args)
        fmt = "float-quantized"
    else:
        scale, zp = calculate_qparams(w.amin(1, keepdim=True), w.amax(1, keepdim=True), args)
        fmt = "float-quantized"
    compressor = BaseCompressor.get_value_from_registry(fmt)
    local = {"weight": w, "weight_scale": scale.to(w.dtype)}
    if not args.symmetric:
        local["weight_zero_point"] = zp
    compressed = compressor.compress(local, scheme)
    real = compressor.decompress(compressed, scheme)["weight"]
    layer = name[: -len(".weight")]
    return {f"{layer}.{k}": v for k, v in compressed.items()}, real


def write_compressed_tensors_checkpoint(tiny: TinyModel, folder: str, kind: str) -> Any:
    """tiny's weights as compressed-tensors writes them: W4A16 int4 groups (pack-quantized,
    symmetric or not) or FP8 (float-quantized, per channel with dynamic per-token activations,
    or per block with per-group activations); returns HF's model of the decompressed weights."""
    assert kind in CT_SCHEMES
    scheme = _ct_scheme(kind)
    qc = {"quant_method": "compressed-tensors", "format": "pack-quantized" if kind.startswith("w4a16")
          else "float-quantized", "ignore": ["lm_head"],
          "config_groups": {"group_0": scheme.model_dump(mode="json")}}
    return _write(tiny, folder, lambda name, w: _ct_tensors(name, w, kind), qc)
