"""Start-up says what it does at INFO, in order: the kernel choices, the model it loads (path,
format, dtype) and its weights' size, the KV cache's sizing rule and capacity, and when the engine
core is ready. (The C++ kernels' build messages: tests/kernels/test_cpu_kernel_build.py.)"""
from __future__ import annotations

import logging

from pagedllm.bench.model_folders import write_model_folder
from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.core import EngineCore

TINY = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=384,
            max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)


def test_startup_logs_each_stage_in_order(tmp_path, caplog):
    folder = write_model_folder(str(tmp_path / "tiny"), TINY)
    config = EngineArgs(model=folder, device="cpu", load_format="dummy", max_num_seqs=4).create_engine_config()
    with caplog.at_level(logging.INFO, logger="pagedllm"):
        core = EngineCore(config, eos_token_id=2)
    core.shutdown()
    expected = [
        "Kernels: attention backend",
        f"Loading {folder} (LlamaForCausalLM, random weights) as float32 on cpu",
        "Loaded 0.4 MiB of float32 weights in",  # (2 x 384 x 64 + 2 layers of 30848 + 64) x 4 bytes
        "Linear layers:",
        # 4 requests of 256 tokens: 64 blocks of 16 tokens x 2 layers x 2 kv heads x 16 x 4 bytes x 2 (K, V)
        "KV cache size (CPU default): 0.5 MiB = min(0.5 MiB for max_num_seqs 4 x max_model_len 256",
        "KV cache: 64 blocks of 16 tokens = 1024 tokens, 0.5 MiB on cpu (4.0 requests of max_model_len 256 at once)",
        "Engine core ready in",
    ]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    positions = []
    for text in expected:
        found = [i for i, m in enumerate(messages) if m.startswith(text)]
        assert found, f"no INFO line starts with {text!r} in {messages}"
        positions.append(found[0])
    assert positions == sorted(positions), messages
