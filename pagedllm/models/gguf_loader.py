"""Stream tensors from a GGUF file under HF names, dequantized to float32 (F16/BF16 kept as is).

llama.cpp's converter permutes the rows of attn_q/attn_k for the "llama" architecture (it turns
HF's rotate-half rotary layout into interleaved pairs); we undo that so the tensors equal HF's.
"""
from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

# GGUF per-block tensor name -> HF module name under model.layers.N
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Not weights: llama3 GGUFs store precomputed rope frequency factors; we derive them from the config.
_IGNORED = {"rope_freqs"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
_UNQUANTIZED = ("F32", "F16", "BF16")
logger = logging.getLogger(__name__)


def gguf_to_hf_name(name: str) -> str | None:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None for non-weights."""
    match = _BLOCK_RE.match(name)
    if match:
        layer, part, attr = match.groups()
        if part not in _BLOCK_NAMES:
            raise ValueError(f"Unknown GGUF tensor {name!r}.")
        return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{attr}"
    base, _, attr = name.rpartition(".")
    if base in _IGNORED:
        return None
    if base not in _TOP_NAMES:
        raise ValueError(f"Unknown GGUF tensor {name!r}.")
    return f"{_TOP_NAMES[base]}.{attr}"


def reverse_llama_permute(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permute. Its converter did, per head of `dim` rows,
    w.reshape(heads, 2, dim/2, ...).swapaxes(1, 2): rows [a0..a_{d/2-1}, b0..] became [a0, b0, a1, b1, ...].
    So reading rows as (heads, dim/2, 2) and swapping back restores HF's order."""
    half = w.shape[0] // num_heads // 2
    return w.reshape(num_heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _to_torch(tensor: Any) -> torch.Tensor:
    """A GGUFReader tensor as a torch tensor of HF's shape (GGUF lists dims innermost-first)."""
    import gguf

    qtype = tensor.tensor_type
    shape = tuple(int(d) for d in reversed(tensor.shape))
    if qtype == gguf.GGMLQuantizationType.F32:
        return torch.from_numpy(np.array(tensor.data, dtype=np.float32)).reshape(shape)
    if qtype == gguf.GGMLQuantizationType.F16:
        return torch.from_numpy(np.array(tensor.data, dtype=np.float16)).reshape(shape)
    if qtype == gguf.GGMLQuantizationType.BF16:
        raw = np.ascontiguousarray(tensor.data).view(np.int16)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16).reshape(shape)
    return torch.from_numpy(gguf.quants.dequantize(tensor.data, qtype)).reshape(shape)


def gguf_metadata(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _reader(path: str) -> Any:
    if not os.path.isfile(path):
        raise ValueError(f"GGUF file {path!r} does not exist.")
    stat = os.stat(path)
    return _cached_reader(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, mtime_ns: int, size: int) -> Any:
    """One parse per file version: gguf-py reads every metadata field eagerly (a tokenizer of 49k
    entries takes seconds), and loading asks twice (the formats, then the tensors)."""
    import gguf

    return gguf.GGUFReader(path)


def gguf_weight_formats(path: str, hf_config: Any) -> dict[str, str]:
    """HF weight name -> GGML type name ("Q4_1") of every tensor the file stores quantized, for
    the quantized path's linear and embedding methods. A tied LM head takes the embedding's.
    Raises ValueError naming the tensor, its type and the supported types when the kernels cannot
    run one of them (nothing is dequantized silently)."""
    from pagedllm.kernels.cpu.quant import SUPPORTED_TYPES

    supported = {t.name for t in SUPPORTED_TYPES.values()}
    formats: dict[str, str] = {}
    for tensor in _reader(path).tensors:
        hf_name, type_name = gguf_to_hf_name(tensor.name), tensor.tensor_type.name
        if hf_name is None or type_name in _UNQUANTIZED:
            continue
        if type_name not in supported:
            raise ValueError(f"GGUF tensor {tensor.name!r} is stored as {type_name}, which the quantized CPU "
                             f"kernels do not run (supported: {', '.join(sorted(supported | set(_UNQUANTIZED)))}); "
                             "pass quantization='none' to dequantize it at load if gguf-py can.")
        formats[hf_name] = type_name
    embed = formats.get("model.embed_tokens.weight")
    if embed and "lm_head.weight" not in formats and getattr(hf_config, "tie_word_embeddings", False):
        formats["lm_head.weight"] = embed
    return formats


def iter_gguf_weights(path: str, hf_config: Any, keep_quantized: bool = False) -> Iterator[tuple[str, Any]]:
    """(hf_name, tensor) for every weight in the GGUF file at `path`: float tensors, and with
    `keep_quantized` the quantized ones as GGUFTensors (their blocks as stored), else dequantized
    to float32."""
    from pagedllm.layers.gguf_weights import GGUFTensor

    reader = _reader(path)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    quantized = set(types) - set(_UNQUANTIZED)
    logger.info("GGUF tensors: %s%s", ", ".join(f"{n} {name}" for name, n in types.most_common()),
                "" if not quantized else "; quantized ones kept quantized" if keep_quantized
                else "; quantized ones dequantized at load")
    permuted = gguf_metadata(reader, "general.architecture") == "llama"
    num_heads = hf_config.num_attention_heads
    num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or num_heads
    for tensor in reader.tensors:
        hf_name = gguf_to_hf_name(tensor.name)
        if hf_name is None:
            continue
        heads = num_heads if ".attn_q." in tensor.name else num_kv_heads if ".attn_k." in tensor.name else 0
        if keep_quantized and tensor.tensor_type.name not in _UNQUANTIZED:
            rows, cols = (int(d) for d in reversed(tensor.shape))
            data = torch.from_numpy(np.array(tensor.data, copy=True)).view(torch.uint8).reshape(rows, -1)
            if permuted and heads:
                data = reverse_llama_permute(data, heads).contiguous()
            yield hf_name, GGUFTensor(data, int(tensor.tensor_type), rows, cols)
            continue
        weight = _to_torch(tensor)
        if permuted and heads:
            weight = reverse_llama_permute(weight, heads)
        yield hf_name, weight
