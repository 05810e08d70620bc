"""INT4 weight-only linear methods (AWQ, GPTQ; quantization/int4.py).

Loading unpacks each shard's checkpoint tensors into staging parameters of the layer, one value a
byte ([in, out] like the unquantized weight_t): `weight_q` uint8 4-bit values, `weight_zeros`
uint8 [in / G, out], `weight_scales` [in / G, out]. After loading they are repacked once into
the kernels' layout (kernels/quant_reference.py): `qweight` int32 [in / 8, out], `scales` and
`zeros` [in / G, out] in the activations' dtype, and the staging freed.

Int4LinearMethod dequantizes in torch per call (the CPU's fallback and the reference). On CUDA,
Int4TritonLinearMethod streams the packed weight through the skinny GEMM for steps of at most 16
rows (with its epilogues) and through a dequantizing Triton GEMM for larger ones.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagedllm.kernels.quant_reference import dequantize_int4, pack_int4_rows, unpack_int4_cols, unpack_int4_rows
from pagedllm.layers.linear_method import WHOLE, GatedAct, LinearMethod, LinearSpec, NormScale, TensorAxes
from pagedllm.layers.loadable import copy_checked, new_param

if TYPE_CHECKING:
    from pagedllm.kernels.triton.skinny_gemm import GemvConfig
    from pagedllm.layers.linear import Linear
    from pagedllm.quantization.int4 import Int4Scheme

# Steps of at least this many rows dequantize the weight into a bf16 scratch and run cuBLAS: there
# the GEMM is compute-bound, and writing and reading the dense weight once (about 4 x the packed
# bytes) costs less than dequantizing every tile inside a Triton GEMM that runs below cuBLAS's rate
# (vLLM's AWQ path switches the same way, at 256 tokens).
DENSE_GEMM_ROWS = 256

_ATTRS = {"awq": ("qweight", "qzeros", "scales"), "gptq": ("qweight", "qzeros", "scales", "g_idx"),
          "pack-quantized": ("weight_packed", "weight_scale", "weight_shape")}


def unpack_checkpoint_tensor(fmt: str, attr: str, tensor: torch.Tensor, in_features: int, group: int,
                             size: int) -> tuple[str, torch.Tensor] | None:
    """One checkpoint tensor of an INT4 weight of `size` output features, unpacked: ("q", uint8
    [in, size]), ("zeros", uint8 [in / G, size]), ("scales", [in / G, size]) or ("g_idx", [in]
    int64: each input feature's group); None for what is only checked (weight_shape). ValueError
    for what is not supported."""
    if attr == "qweight":
        return "q", unpack_int4_cols(tensor, awq_order=True) if fmt == "awq" else unpack_int4_rows(tensor)
    if attr == "qzeros":
        z = unpack_int4_cols(tensor, awq_order=fmt == "awq")
        if fmt == "gptq":  # stored minus one
            z = (z.to(torch.int16) + 1).clamp(0, 15).to(torch.uint8)
        return "zeros", z
    if attr == "scales":
        return "scales", tensor
    if attr == "weight_packed":  # compressed-tensors: [size, in / 8], values in order
        return "q", unpack_int4_cols(tensor).t()
    if attr == "weight_scale":
        return "scales", tensor.t()
    if attr == "weight_zero_point":  # [size / 8, in / G], packed along the output rows
        return "zeros", unpack_int4_rows(tensor).t()
    if attr == "weight_shape":  # the whole weight's; a tensor-parallel rank holds an equal part of its
        rows, cols = tensor.tolist()  # rows or of its columns
        if rows % size or cols % in_features or (rows != size and cols != in_features):
            raise ValueError(f"weight_shape {tensor.tolist()} of a weight of {size} x {in_features}.")
        return None
    if attr == "g_idx":  # each input feature's group: k // G, or an act-order checkpoint's permutation
        g_idx = tensor.long()
        g_idx = g_idx - g_idx.min()  # a tensor-parallel rank's input features: its own groups, from 0
        if g_idx.shape != (in_features,) or not torch.equal(torch.bincount(g_idx, minlength=in_features // group),
                                                            torch.full((in_features // group,), group,
                                                                       device=g_idx.device)):
            raise ValueError(f"g_idx must give each of the {in_features // group} groups {group} input features "
                             "(an act-order GPTQ checkpoint's groups mix all input features: it does not split over "
                             "tensor-parallel ranks).")
        return "g_idx", g_idx
    raise ValueError(f"Unexpected {fmt} parameter {attr!r}.")


def int4_tensor_axes(fmt: str, attr: str, group: int) -> TensorAxes:
    """Where each format's tensors hold the output and input features (packing 8 a word, G a group)."""
    axes = {
        "awq": {"qweight": TensorAxes(1, 8, 0, 1), "qzeros": TensorAxes(1, 8, 0, group),
                "scales": TensorAxes(1, 1, 0, group)},
        "gptq": {"qweight": TensorAxes(1, 1, 0, 8), "qzeros": TensorAxes(1, 8, 0, group),
                 "scales": TensorAxes(1, 1, 0, group), "g_idx": TensorAxes(None, 1, 0, 1)},
        "pack-quantized": {"weight_packed": TensorAxes(0, 1, 1, 8), "weight_scale": TensorAxes(0, 1, 1, group),
                           "weight_zero_point": TensorAxes(0, 8, 1, group), "weight_shape": WHOLE},
    }[fmt]
    if attr not in axes:
        raise ValueError(f"Unexpected {fmt} parameter {attr!r}.")
    return axes[attr]


def int4_attrs(scheme: Int4Scheme) -> tuple[str, ...]:
    """The checkpoint tensors of one INT4 weight in the scheme's format."""
    asymmetric_ct = scheme.format == "pack-quantized" and not scheme.symmetric
    return _ATTRS[scheme.format] + (("weight_zero_point",) if asymmetric_ct else ())


class Int4LinearMethod(LinearMethod):
    def __init__(self, spec: LinearSpec, scheme: Int4Scheme) -> None:
        super().__init__(spec)
        self.scheme = scheme
        g = scheme.group_size if scheme.group_size > 0 else spec.in_features
        if spec.in_features % g or spec.in_features % 8 or spec.out_features % 8:
            raise ValueError(f"An INT4 layer of {spec.in_features} inputs and {spec.out_features} outputs (a "
                             f"tensor-parallel rank's part, with several) does not split into groups of {g} inputs "
                             f"and words of 8 (group_size {g}).")
        self.group = g
        self._g_idx: torch.Tensor | None = None  # an act-order checkpoint's, until loading ends
        self.act_order = False  # the layer's `act_order` buffer permutes each step's input

    def weight_attrs(self) -> tuple[str, ...]:
        return int4_attrs(self.scheme)

    def tensor_axes(self, attr: str, tensor: torch.Tensor) -> TensorAxes:
        return int4_tensor_axes(self.scheme.format, attr, self.group)

    def create_weights(self, layer: Linear) -> None:
        k, n, groups = self.spec.in_features, self.spec.out_features, self.spec.in_features // self.group
        layer.weight_q = new_param(k, n, dtype=torch.uint8)
        layer.weight_zeros = new_param(groups, n, dtype=torch.uint8)
        layer.weight_scales = new_param(groups, n, dtype=self.spec.dtype)
        if self.scheme.format == "pack-quantized" and self.scheme.symmetric:
            layer.weight_zeros.fill_(8)  # compressed-tensors' signed values, offset by 8 when packed

    def load_weight(self, layer: Linear, tensor: torch.Tensor, start: int, size: int) -> None:
        raise ValueError("An INT4 layer loads qweight, qzeros and scales, not a plain weight.")

    def load_tensor(self, layer: Linear, attr: str, tensor: torch.Tensor, start: int, size: int) -> None:
        unpacked = unpack_checkpoint_tensor(self.scheme.format, attr, tensor, self.spec.in_features, self.group, size)
        if unpacked is None:
            return
        kind, value = unpacked
        if kind == "g_idx":
            self._load_g_idx(value)
            return
        target = {"q": layer.weight_q, "zeros": layer.weight_zeros, "scales": layer.weight_scales}[kind]
        copy_checked(target[:, start:start + size], value, f"{self.scheme.format} {attr} (unpacked)")

    def _load_g_idx(self, g_idx: torch.Tensor) -> None:
        """An act-order checkpoint (GPTQ desc_act=true) groups its input features in a permuted
        order; the shards of a merged layer share it (they quantized the same input)."""
        if torch.equal(g_idx, torch.arange(g_idx.numel(), device=g_idx.device) // self.group):
            return
        if self._g_idx is not None and not torch.equal(self._g_idx, g_idx):
            raise ValueError("The shards of a merged GPTQ layer order their input features differently (act-order); "
                             "pagedllm needs one order per input.")
        self._g_idx = g_idx

    @torch.no_grad()
    def process_weights_after_loading(self, layer: Linear) -> None:
        if self._g_idx is not None:
            # Act-order: the input features sorted by group, so each group is G consecutive rows
            # again; each step's activations are gathered into the same order (`ordered`).
            perm = torch.argsort(self._g_idx, stable=True)
            layer.weight_q.data = layer.weight_q.data[perm]
            layer.register_buffer("act_order", perm, persistent=False)
            self.act_order = True
            self._g_idx = None
        layer.qweight = torch.nn.Parameter(pack_int4_rows(layer.weight_q), requires_grad=False)
        layer.zeros = torch.nn.Parameter(layer.weight_zeros.to(self.spec.dtype), requires_grad=False)
        layer.scales = torch.nn.Parameter(layer.weight_scales.detach().clone(), requires_grad=False)
        for staging in ("weight_q", "weight_zeros", "weight_scales"):
            delattr(layer, staging)

    def ordered(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        """x's features in the order the weight's rows are in (act-order checkpoints: gathered)."""
        return x.index_select(-1, layer.act_order) if self.act_order else x

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        w = dequantize_int4(layer.qweight, layer.scales, layer.zeros, self.group).to(x.dtype)
        out = torch.matmul(self.ordered(layer, x), w)
        return out if layer.bias is None else out + layer.bias


class Int4TritonLinearMethod(Int4LinearMethod):
    def __init__(self, spec: LinearSpec, scheme: Int4Scheme, skinny: GemvConfig | None, pdl: bool) -> None:
        """skinny: the launch shape of steps of at most 16 rows (None: the dequantizing GEMM)."""
        super().__init__(spec, scheme)
        # imported once here, not per call (a lazy import: Triton is CUDA's only)
        from pagedllm.kernels.triton.int4_gemm import dequantize_int4_weight, int4_gemm
        from pagedllm.kernels.triton.skinny_gemm import MAX_ROWS, skinny_gemm

        self._dequantize, self._int4_gemm, self._skinny_gemm = dequantize_int4_weight, int4_gemm, skinny_gemm
        self._max_skinny_rows = MAX_ROWS
        self.skinny, self.pdl = skinny, pdl

    def _skinny_rows(self, x: torch.Tensor) -> bool:
        return (self.skinny is not None and x.dim() == 2 and 0 < x.shape[0] <= self._max_skinny_rows
                and x.stride(-1) == 1 and x.dtype in (torch.bfloat16, torch.float16))

    def _skinny(self, layer: Linear, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        assert self.skinny is not None
        return self._skinny_gemm(x, layer.qweight, self.skinny, pdl=self.pdl, weight_scale=layer.scales,
                                 weight_zeros=layer.zeros, scale_block=self.group, **kwargs)  # type: ignore[arg-type]

    def apply(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return self.apply(layer, x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        x = self.ordered(layer, x)
        if not self.spec.gated and self._skinny_rows(x):
            return self._skinny(layer, x)
        return self._gemm(layer, x)

    def _gemm(self, layer: Linear, x: torch.Tensor) -> torch.Tensor:
        """x, already in the weight's input order (`ordered`) -> x @ W (+ bias)."""
        if self.spec.out_features % 16:  # no tensor-core tile divides it
            return super().apply(layer, x)
        if x.shape[0] >= DENSE_GEMM_ROWS:
            w = self._dequantize(layer.qweight, layer.scales, layer.zeros, self.group, x.dtype)
            return torch.matmul(x, w) if layer.bias is None else torch.addmm(layer.bias, x, w)
        out = self._int4_gemm(x.contiguous(), layer.qweight, layer.scales, layer.zeros, self.group)
        return out if layer.bias is None else out.add_(layer.bias)

    def apply_add(self, layer: Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.spec.gated or not self._skinny_rows(x) or residual.stride(-1) != 1:
            return super().apply_add(layer, x, residual)
        return self._skinny(layer, self.ordered(layer, x), out=residual, accumulate=True)

    def apply_gated(self, layer: Linear, x: torch.Tensor, act: GatedAct,
                    norm_scale: NormScale | None) -> torch.Tensor:
        x = self.ordered(layer, x)
        if not self.spec.gated or not self._skinny_rows(x):
            return act(self._gemm(layer, x), norm_scale)
        norm_input, eps = norm_scale if norm_scale is not None else (None, 0.0)
        return self._skinny(layer, x, gated=True, norm_input=norm_input, eps=eps)


def cuda_int4_method(spec: LinearSpec, scheme: Int4Scheme, skinny_policy: str, pdl: bool) -> Int4LinearMethod:
    """CUDA's INT4 method: the skinny GEMM's launch shape for small steps where its policy takes
    the weight (none with a bias), its K tile no larger than a group (one scale row a tile)."""
    import dataclasses

    from pagedllm.kernels.triton.skinny_gemm import num_sms, skinny_config

    skinny = None
    if not spec.bias:
        skinny = skinny_config(spec.in_features, spec.out_features, torch.int32, skinny_policy,
                               num_sms(torch.get_default_device()), spec.gated)
    if skinny is not None and skinny.block_k > scheme.group_size:
        skinny = dataclasses.replace(skinny, block_k=scheme.group_size)
    return Int4TritonLinearMethod(spec, scheme, skinny, pdl)
