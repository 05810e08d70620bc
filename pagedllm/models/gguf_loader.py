"""Stream tensors from a GGUF file under HF names, dequantized to float32 (F16/BF16 kept as is).

llama.cpp's converter permutes the rows of attn_q/attn_k for the "llama" architecture (it turns
HF's rotate-half rotary layout into interleaved pairs); we undo that so the tensors equal HF's.
"""
from __future__ import annotations

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


def iter_gguf_weights(path: str, hf_config: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(hf_name, tensor) for every weight in the GGUF file at `path`."""
    import gguf

    if not os.path.isfile(path):
        raise ValueError(f"GGUF file {path!r} does not exist.")
    reader = gguf.GGUFReader(path)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    logger.info("GGUF tensors: %s%s", ", ".join(f"{n} {name}" for name, n in types.most_common()),
                "; quantized ones are dequantized at load" if set(types) - set(_UNQUANTIZED) else "")
    permuted = gguf_metadata(reader, "general.architecture") == "llama"
    num_heads = hf_config.num_attention_heads
    num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or num_heads
    for tensor in reader.tensors:
        hf_name = gguf_to_hf_name(tensor.name)
        if hf_name is None:
            continue
        weight = _to_torch(tensor)
        if permuted and ".attn_q." in tensor.name:
            weight = reverse_llama_permute(weight, num_heads)
        elif permuted and ".attn_k." in tensor.name:
            weight = reverse_llama_permute(weight, num_kv_heads)
        yield hf_name, weight
