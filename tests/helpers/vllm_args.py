"""vLLM engine arguments at values that change nothing in pagedllm (engine/vllm_compat.py)."""
from __future__ import annotations

HARMLESS = dict(trust_remote_code=False, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1,
                quantization=None, disable_log_stats=True, tokenizer_mode="auto", enforce_eager=True,
                swap_space=4, max_seq_len_to_capture=8192, kv_cache_dtype="auto", revision=None,
                distributed_executor_backend=None, disable_custom_all_reduce=True, enable_chunked_prefill=True,
                cpu_offload_gb=0, enable_lora=False, task="generate", disable_sliding_window=False)
