"""vLLM drop-in: engine arguments vLLM users pass at their default or a no-op value are accepted;
an unsupported value is an error that names the argument (issue 17, item 9)."""
from __future__ import annotations

import pytest

from pagedllm.engine.arg_utils import EngineArgs
from tests.helpers.vllm_args import HARMLESS


def test_vllm_arguments_at_harmless_values_are_accepted() -> None:
    args = EngineArgs(model="/nowhere", **HARMLESS)
    assert args.tensor_parallel_size == 1 and args.trust_remote_code is False
    EngineArgs(quantization="none", tokenizer_mode="hf", swap_space=0, enable_chunked_prefill=None)


@pytest.mark.parametrize("name, value, message", [
    ("tensor_parallel_size", 0, "tensor_parallel_size must be a positive integer"),
    ("distributed_executor_backend", "external_launcher",
     "distributed_executor_backend='external_launcher' is not supported yet"),
    ("pipeline_parallel_size", 0, "pipeline_parallel_size must be a positive integer"),
    ("quantization", "bitsandbytes", "quantization='bitsandbytes' is not supported yet"),
    ("tokenizer_mode", "mistral", "tokenizer_mode='mistral' is not supported yet"),
    ("kv_cache_dtype", "fp8_e5m2", "kv_cache_dtype='fp8_e5m2' is not supported yet"),
    ("enable_lora", True, "enable_lora=True is not supported yet"),
    ("trust_remote_code", True, "trust_remote_code=True is not supported: pagedllm never runs"),
    ("swap_space", -1, "swap_space=-1"),
])
def test_unsupported_values_name_the_argument(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineArgs(**{name: value})


def test_kv_cache_dtype_resolves_per_device() -> None:
    from pagedllm.engine.arg_utils import _resolve_kv_cache_dtype

    assert _resolve_kv_cache_dtype("auto", "float32", "cpu") == "float32"
    assert _resolve_kv_cache_dtype("auto", "float32", "cpu", quantized=True) == "bfloat16"
    assert _resolve_kv_cache_dtype("float32", "float32", "cpu", quantized=True) == "float32"
    assert _resolve_kv_cache_dtype("auto", "bfloat16", "cuda") == "bfloat16"
    assert _resolve_kv_cache_dtype("bfloat16", "float32", "cpu") == "bfloat16"
    assert _resolve_kv_cache_dtype("bfloat16", "bfloat16", "cuda") == "bfloat16"
    with pytest.raises(ValueError, match="runs on the CPU only"):
        _resolve_kv_cache_dtype("bfloat16", "float32", "cuda")
    assert _resolve_kv_cache_dtype("fp8", "bfloat16", "cuda") == "float8_e4m3fn"
    assert _resolve_kv_cache_dtype("fp8_e4m3", "float16", "cuda") == "float8_e4m3fn"
    with pytest.raises(ValueError, match="kv_cache_dtype='fp8' runs on CUDA only"):
        _resolve_kv_cache_dtype("fp8", "float32", "cpu")


def test_an_fp8_kv_cache_holds_twice_the_tokens_and_refuses_latent_attention(tiny_hf_model) -> None:
    from pagedllm.config import CacheConfig, ModelConfig
    from pagedllm.engine.arg_utils import _check_cache_for_model
    from pagedllm.models.loader import load_hf_config
    from pagedllm.worker.kv_cache import KVCacheSpec

    tiny = tiny_hf_model("llama")
    model = ModelConfig(tiny.folder, None, None, load_hf_config(tiny.source), "bfloat16", 256)
    bf16, fp8 = (KVCacheSpec.from_configs(model, CacheConfig(cache_dtype=d)) for d in ("bfloat16", "float8_e4m3fn"))
    assert bf16.bytes_per_block == 2 * fp8.bytes_per_block
    assert _check_cache_for_model("float8_e4m3fn", model) == "float8_e4m3fn"
    mla = tiny_hf_model("deepseek_v2")
    with pytest.raises(ValueError, match="not supported for latent attention"):
        _check_cache_for_model("float8_e4m3fn", ModelConfig(mla.folder, None, None, load_hf_config(mla.source),
                                                            "bfloat16", 256))
