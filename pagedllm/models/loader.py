"""From a ModelSource / ModelConfig to a config, EOS ids and a loaded model. Never downloads."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pagedllm.config import ModelConfig
from pagedllm.layers.embedding import LMHead, VocabEmbedding
from pagedllm.layers.fused_moe import FusedMoE
from pagedllm.layers.gguf_weights import packed_bytes
from pagedllm.layers.layer_kernels import LayerKernels, current_layer_kernels, use_layer_kernels
from pagedllm.layers.linear import Linear
from pagedllm.models.common import DecoderForCausalLM, to_torch_dtype
from pagedllm.models.gguf_loader import gguf_metadata, gguf_weight_formats, iter_gguf_weights
from pagedllm.models.norm_folding import fold_norms
from pagedllm.models.registry import MODELS, get_model_class
from pagedllm.models.safetensors_loader import iter_safetensors_weights, safetensors_files, safetensors_tensor_names
from pagedllm.models.source import ModelSource

logger = logging.getLogger(__name__)
# GGUF configs come without `architectures`; derive it from model_type.
_ARCH_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def _check_source(source: ModelSource) -> None:
    if not os.path.isdir(source.path):
        raise ValueError(f"Model folder {source.path!r} does not exist.")
    if source.gguf_file is not None:
        if not os.path.isfile(os.path.join(source.path, source.gguf_file)):
            raise ValueError(f"GGUF file {source.display_name!r} does not exist.")
    elif not os.path.isfile(os.path.join(source.path, "config.json")):
        raise ValueError(f"Model folder {source.path!r} has no config.json.")


def load_hf_config(source: ModelSource) -> Any:
    """The transformers PretrainedConfig of a HF folder or GGUF file (no remote code)."""
    from transformers import AutoConfig

    _check_source(source)
    kwargs = {"gguf_file": source.gguf_file} if source.is_gguf else {}
    config = AutoConfig.from_pretrained(source.path, trust_remote_code=False, local_files_only=True, **kwargs)
    if not getattr(config, "architectures", None) and config.model_type in _ARCH_BY_MODEL_TYPE:
        config.architectures = [_ARCH_BY_MODEL_TYPE[config.model_type]]
    return config


def check_loadable(source: ModelSource, hf_config: Any, load_format: str = "auto") -> None:
    """What can be known about a model before the engine core starts: an architecture pagedllm
    implements and, unless the weights are dummy, a checkpoint to read (ValueError otherwise). The
    server checks it in its own process, so a bad model is one clear error, not a failed core."""
    archs = getattr(hf_config, "architectures", None) or []
    if not archs:
        raise ValueError(f"The model config of {source.display_name} names no architecture.")
    MODELS.check(archs[0])
    if load_format == "auto" and not source.is_gguf:
        safetensors_files(source.path)


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def get_generation_eos_ids(source: ModelSource, hf_config: Any | None = None) -> list[int]:
    """Token ids that end generation: generation_config.json's eos_token_id (int or list), else
    config.json's; for GGUF the tokenizer.ggml.eos_token_id metadata, which transformers has
    already copied into a GGUF's config (passing it saves parsing the file again, ~2 s)."""
    _check_source(source)
    if source.is_gguf and hf_config is not None and getattr(hf_config, "eos_token_id", None) is not None:
        return _as_id_list(hf_config.eos_token_id)
    if source.gguf_file is not None:
        import gguf

        reader = gguf.GGUFReader(os.path.join(source.path, source.gguf_file))
        return _as_id_list(gguf_metadata(reader, "tokenizer.ggml.eos_token_id"))
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(source.path, name)
        if os.path.isfile(path):
            with open(path) as f:
                ids = _as_id_list(json.load(f).get("eos_token_id"))
            if ids:
                return ids
    return []


def iter_weights(source: ModelSource, hf_config: Any, keep_quantized: bool = False) -> Iterator[tuple[str, Any]]:
    """(hf_name, tensor) pairs of the source's checkpoint; with `keep_quantized` a GGUF file's
    quantized tensors come as GGUFTensors (their blocks as stored)."""
    _check_source(source)
    if source.gguf_file is not None:
        return iter_gguf_weights(os.path.join(source.path, source.gguf_file), hf_config, keep_quantized)
    return iter_safetensors_weights(source.path)


def checkpoint_kernels(model_config: ModelConfig, kernels: LayerKernels) -> LayerKernels:
    """The platform's layer kernels told which weights the checkpoint stores quantized (a GGUF
    file's types, read from its header; a safetensors checkpoint's quantized layers, by their
    scale tensors' names), so each layer's method is chosen for its format."""
    if model_config.quantization is None:
        return kernels
    if model_config.gguf_file is None:
        from pagedllm.quantization.registry import quantization_config

        config = quantization_config(model_config.quantization, model_config.hf_config)
        if model_config.load_format != "dummy" and getattr(model_config.hf_config, "quantization_config", None):
            config = config.with_layers(safetensors_tensor_names(model_config.model))
        return dataclasses.replace(kernels, quant_config=config)
    if model_config.load_format == "dummy":
        return kernels
    path = os.path.join(model_config.model, model_config.gguf_file)
    formats = gguf_weight_formats(path, model_config.hf_config)
    return dataclasses.replace(kernels, quantization=model_config.quantization, weight_formats=formats)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as loaded, a shared tensor counted once (a tied lm_head that
    holds its own copy of the embedding counts twice, as it takes memory twice). Call it before
    process_weights_after_loading: linear methods may then move weights out of the parameters."""
    seen: set[int] = set()
    nbytes = 0
    for p in model.parameters():
        if p.numel() and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            nbytes += p.numel() * p.element_size()
    return nbytes


def quantized_layer_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers of the layers whose method runs a safetensors
    quantization scheme (quantization/): what they hold changes when they repack after loading."""
    return sum(t.numel() * t.element_size() for m in model.modules()
               if getattr(getattr(m, "method", None), "scheme", None) is not None
               for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))


def process_weights_after_loading(model: nn.Module) -> None:
    """Let every linear layer's, embedding's and experts' method repack its loaded weight (the
    CPU's packed GEMMs, quantized GGUF blocks)."""
    for module in model.modules():
        if isinstance(module, (Linear, VocabEmbedding, FusedMoE)):
            module.process_weights_after_loading()


@torch.no_grad()
def init_dummy_weights(model: DecoderForCausalLM, seed: int = 0) -> None:
    """Random weights in place, on the model's device (benchmarks of a model shape without its
    checkpoint): matrices ~ N(0, 0.02) like common initialisers, so activations and logits stay
    finite in bf16; norm scales 1 and biases 0, so no layer blows up or vanishes."""
    gen: dict[torch.device, torch.Generator] = {}
    for name, p in model.named_parameters():
        if p.numel() == 0:
            continue
        if "_scale" in name:  # a quantized checkpoint's scales, so its weights stand for about N(0, 0.02):
            # fp8 values ~ N(0, 1); int4 (q - zero) uniform over -15..15, std about 6
            p.fill_(0.003 if name.endswith("weight_scales") else 0.02)
            continue
        if not p.dtype.is_floating_point:  # packed or unpacked int4 values (uint8: 0..15 each)
            p.random_(0, 16) if p.dtype == torch.uint8 else p.random_()
            continue
        if p.dim() == 1:
            p.fill_(1.0 if "norm" in name else 0.0)
            continue
        g = gen.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
        if p.dtype == torch.float8_e4m3fn:
            p.copy_(torch.empty(p.shape, device=p.device).normal_(0.0, 1.0, generator=g))
            continue
        p.normal_(0.0, 0.02, generator=g)
    head, embedding = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
    tied = getattr(model, "tie_word_embeddings", False)
    if tied and isinstance(head, LMHead) and isinstance(embedding, VocabEmbedding):
        head.tie_to(embedding)  # (a pipeline stage holding one of them keeps its own random rows)


def load_model(model_config: ModelConfig, device: str = "cpu",
               kernels: LayerKernels | None = None) -> DecoderForCausalLM:
    """Build the architecture on `device` with `kernels` (the platform's LayerKernels; None: the
    defaults for the device), load its weights, fold its norms where the kernels say so, let the
    linear methods repack, and return it in eval mode, no grad."""
    source = ModelSource(model_config.model, model_config.gguf_file)
    model_cls = get_model_class(model_config.architecture)
    dummy = model_config.load_format == "dummy"
    logger.info("Loading %s (%s, %s) as %s on %s", source.display_name, model_config.architecture,
                "random weights" if dummy else "GGUF" if source.is_gguf else "safetensors", model_config.dtype,
                device)
    start = time.perf_counter()
    with torch.device(device):
        kernels = checkpoint_kernels(model_config, kernels or current_layer_kernels())
        with use_layer_kernels(kernels):
            model = model_cls(model_config.hf_config, to_torch_dtype(model_config.dtype))
    if dummy:
        init_dummy_weights(model, model_config.seed)
    else:
        model.load_weights(iter_weights(source, model_config.hf_config, keep_quantized=bool(kernels.weight_formats)))
    weight_bytes = parameter_bytes(model)
    quantized_before = quantized_layer_bytes(model)
    if kernels.fold_norms and isinstance(model, DecoderForCausalLM):
        fold_norms(model)  # two launches a layer fewer (models/norm_folding.py)
    process_weights_after_loading(model)
    weight_bytes += packed_bytes(model)  # quantized blocks, held only once they are packed
    # quantized layers as they run: unpacked staging repacked, online quantization applied
    weight_bytes += quantized_layer_bytes(model) - quantized_before
    model.eval()
    model.requires_grad_(False)
    logger.info("Loaded %.1f MiB of %s weights in %.1f s", weight_bytes / 2**20, _weights_kind(model_config, kernels),
                time.perf_counter() - start)
    return model


def _weights_kind(model_config: ModelConfig, kernels: LayerKernels) -> str:
    if kernels.weight_formats:
        return f"{model_config.dtype} and GGUF-quantized"
    if kernels.quant_config is not None:
        return f"{model_config.dtype} and {kernels.quant_config.name}-quantized"
    return model_config.dtype
