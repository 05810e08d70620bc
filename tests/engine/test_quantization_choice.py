"""`quantization`: which weights run how, per checkpoint and device, before anything loads."""
from __future__ import annotations

import logging

import pytest

from pagedllm.engine.arg_utils import EngineArgs, _resolve_quantization
from pagedllm.models.source import ModelSource

GGUF = ModelSource("/models", "model.Q4_1.gguf")
FOLDER = ModelSource("/models/hf")


def test_a_gguf_runs_its_own_types_on_the_cpu_by_default():
    assert _resolve_quantization(None, GGUF, "cpu") == "gguf"
    assert _resolve_quantization("gguf", GGUF, "cpu") == "gguf"
    assert _resolve_quantization("none", GGUF, "cpu") is None  # dequantized at load


def test_a_safetensors_folder_is_unquantized():
    assert _resolve_quantization(None, FOLDER, "cpu") is None
    assert _resolve_quantization("none", FOLDER, "cuda") is None
    with pytest.raises(ValueError, match="needs a GGUF file"):
        _resolve_quantization("gguf", FOLDER, "cpu")


def test_cuda_dequantizes_a_gguf_by_default_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert _resolve_quantization(None, GGUF, "cuda") is None
    assert "dequantized" in caplog.text
    with pytest.raises(ValueError, match="CPU only.*quantization='none'"):
        _resolve_quantization("gguf", GGUF, "cuda")


def test_unknown_values_list_the_supported_ones():
    with pytest.raises(ValueError, match=r"quantization='awq' is not supported yet \(supported: gguf, none"):
        EngineArgs(quantization="awq")
