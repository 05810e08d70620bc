"""`quantization`: which weights run how, per checkpoint and device, before anything loads. A
safetensors checkpoint's own format is detected, online FP8 is offered for an unquantized one,
and every mismatch or unsupported format is a clear error."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from pagedllm.engine.arg_utils import EngineArgs, _resolve_quantization
from pagedllm.models.source import ModelSource
from tests.helpers.quantized_checkpoints import write_fp8_checkpoint, write_int4_checkpoint

GGUF = ModelSource("/models", "model.Q4_1.gguf")
FOLDER = ModelSource("/models/hf")
NO_CONFIG = SimpleNamespace()  # a HF config without quantization_config


def test_a_gguf_runs_its_own_types_on_the_cpu_by_default():
    assert _resolve_quantization(None, GGUF, "cpu", NO_CONFIG) == "gguf"
    assert _resolve_quantization("gguf", GGUF, "cpu", NO_CONFIG) == "gguf"
    assert _resolve_quantization("none", GGUF, "cpu", NO_CONFIG) is None  # dequantized at load


def test_a_safetensors_folder_is_unquantized():
    assert _resolve_quantization(None, FOLDER, "cpu", NO_CONFIG) is None
    assert _resolve_quantization("none", FOLDER, "cuda", NO_CONFIG) is None
    with pytest.raises(ValueError, match="needs a GGUF file"):
        _resolve_quantization("gguf", FOLDER, "cpu", NO_CONFIG)


def test_cuda_dequantizes_a_gguf_by_default_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert _resolve_quantization(None, GGUF, "cuda", NO_CONFIG) is None
    assert "dequantized" in caplog.text
    with pytest.raises(ValueError, match="CPU only.*quantization='none'"):
        _resolve_quantization("gguf", GGUF, "cuda", NO_CONFIG)


def test_unknown_values_list_the_supported_ones():
    with pytest.raises(ValueError, match=r"quantization='bitsandbytes' is not supported yet \(supported: awq, "
                                         r"compressed-tensors, fp8, gguf, gptq, none"):
        EngineArgs(quantization="bitsandbytes")


def _quantization(folder: str, requested: str | None = None) -> str | None:
    return EngineArgs(model=folder, quantization=requested).create_engine_config().model_config.quantization


def test_detection_and_online_fp8(tiny_hf_model, tmp_path):
    plain = tiny_hf_model("llama").folder
    assert _quantization(plain) is None and _quantization(plain, "none") is None
    assert _quantization(plain, "fp8") == "fp8"  # quantized at load
    with pytest.raises(ValueError, match="quantization='awq' needs a checkpoint quantized in that format"):
        _quantization(plain, "awq")
    folder = str(tmp_path / "fp8")
    write_fp8_checkpoint(tiny_hf_model("llama"), folder, "block")
    assert _quantization(folder) == "fp8" and _quantization(folder, "fp8") == "fp8"
    awq = str(tmp_path / "awq")
    write_int4_checkpoint(tiny_hf_model("llama"), awq, "awq")
    assert _quantization(awq) == "awq" and _quantization(awq, "awq_marlin") == "awq"  # vLLM's kernel name
    with pytest.raises(ValueError, match="fp8-quantized; quantization='none' cannot run it"):
        _quantization(folder, "none")
    with pytest.raises(ValueError, match="needs a GGUF file"):
        _quantization(plain, "gguf")


def test_unsupported_checkpoint_formats_name_the_supported(tiny_hf_model, tmp_path):
    import shutil

    folder = tmp_path / "bnb"
    shutil.copytree(tiny_hf_model("llama").folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="quantization 'bitsandbytes' is not supported.*formats: awq, compressed-tensors, fp8, gptq"):
        _quantization(str(folder))
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e5m2"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="FP8 format 'e5m2' is not supported"):
        _quantization(str(folder))
