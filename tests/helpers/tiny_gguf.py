"""A small random-weight llama written as a GGUF file, its matrices in any GGML type gguf-py can
write (K-quants as valid random blocks)."""
from __future__ import annotations

import gguf
import numpy as np

T = gguf.GGMLQuantizationType
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 512, 256, 512, 2, 4, 2  # K-quant rows are 256 wide


def _k_blocks(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid K-quant blocks (gguf-py quantizes none of these types): random quant and scale bytes,
    the fp16 super-block scales (d, and dmin where the type has one) at ggml's offsets, rescaled
    so the weights' spread is that of the other types' (0.08)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    offsets = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    d = rng.uniform(0.5, 1.5, size=(blocks.shape[0], len(offsets))).astype(np.float32)
    for scale in (1.0, 0.08 / gguf.quants.dequantize(_with_scales(blocks, offsets, d), qtype).std()):
        d = (d * scale).astype(np.float16).astype(np.float32)
    return _with_scales(blocks, offsets, d).reshape(rows, cols // block * size)


def _with_scales(blocks: np.ndarray, offsets: list[int], d: np.ndarray) -> np.ndarray:
    for i, at in enumerate(offsets):
        blocks[:, at:at + 2] = d[:, i].astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks


def _weight(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    if gguf.GGML_QUANT_SIZES[qtype][0] == 256:
        return _k_blocks(qtype, rows, cols, rng)
    return gguf.quants.quantize((rng.standard_normal((rows, cols)) * 0.08).astype(np.float32), qtype)


def write_tiny_llama(path: str, qtype: T, seed: int = 0, odd_tensor: tuple[str, T] | None = None,
                     types: dict[str, T] | None = None) -> None:
    """A 2-layer llama GGUF (tied embedding) whose matrices are all stored as `qtype`, except those
    whose name ends with a key of `types` (stored as its value); with `odd_tensor`, that tensor is
    stored as another type (random bytes of its size)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(VOCAB)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    head = HIDDEN // HEADS
    shapes = {"token_embd.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        per_layer = {"attn_q": (HEADS * head, HIDDEN), "attn_k": (KV_HEADS * head, HIDDEN),
                     "attn_v": (KV_HEADS * head, HIDDEN), "attn_output": (HIDDEN, HIDDEN),
                     "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
        shapes.update({f"blk.{i}.{name}.weight": shape for name, shape in per_layer.items()})
    for name, (rows, cols) in shapes.items():
        if odd_tensor is not None and name == odd_tensor[0]:
            block, size = gguf.GGML_QUANT_SIZES[odd_tensor[1]]
            data = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
            w.add_tensor(name, data, raw_dtype=odd_tensor[1])
        else:
            kind = next((t for suffix, t in (types or {}).items() if name.endswith(suffix)), qtype)
            if kind in (T.F16, T.BF16, T.F32):
                data32 = (rng.standard_normal((rows, cols)) * 0.08).astype(np.float32)
                w.add_tensor(name, gguf.quants.quantize(data32, kind), raw_dtype=kind)
            else:
                w.add_tensor(name, _weight(kind, rows, cols, rng), raw_dtype=kind)
    for i in range(LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", (rng.uniform(0.5, 1.5, HIDDEN)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
