"""How far bf16 rounding alone moves the hidden states: the torch reference backend in bf16 against the
same weights in fp32, on the mixed prefill batch that bench_cuda.py's backend check uses. It is the
yardstick for that check's Triton-vs-torch difference (CPU; the Qwen3-0.6B shape fits in RAM twice).

    python benchmarks/bf16_rounding_noise.py
"""
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pagedllm import LLM
from pagedllm.attention.forward_context import ForwardContext, set_forward_context
from pagedllm.attention.torch_ref import TorchAttentionBackend
from pagedllm.bench.model_folders import QWEN3_0_6B, write_model_folder
from pagedllm.worker.kv_cache import KVCacheSpec, allocate_kv_caches
from pagedllm.worker.memory import dummy_prefill

shape = dict(QWEN3_0_6B)
folder = write_model_folder("/tmp/noise-qwen3", shape)
# cpu_gemm="torch": plain weights, so the model can be copied to fp32
llm = LLM(folder, load_format="dummy", dtype="bfloat16", device="cpu", max_model_len=1024, kv_cache_memory=64 << 20,
          cpu_gemm="torch")
worker = llm.llm_engine.executor.worker
cfg = llm.llm_engine.config
spec = KVCacheSpec.from_configs(cfg.model_config, cfg.cache_config)
lens = [1, 17, 300, 64, 1, 129]
metadata, ids, positions = dummy_prefill(lens, spec.block_size, cfg.model_config.hf_config.vocab_size, "cpu")
backend = TorchAttentionBackend()
nblocks = sum(-(-n // spec.block_size) for n in lens)

@torch.inference_mode()
def run(model, dtype):
    s = KVCacheSpec(spec.num_layers, spec.num_kv_heads, spec.head_size, dtype, spec.block_size)
    caches = allocate_kv_caches(s, nblocks, backend, torch.device("cpu"))
    metadata.backend_cache.clear()
    with set_forward_context(ForwardContext(metadata, caches, backend)):
        return model(ids, positions).float()

h_bf16 = run(worker.model, "bfloat16")
m32 = copy.deepcopy(worker.model).float()
h_fp32 = run(m32, "float32")
print("torch backend bf16 vs fp32 (same weights): rel err", float((h_bf16 - h_fp32).norm() / h_fp32.norm()))
