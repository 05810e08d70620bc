"""vLLM's `quantization` for safetensors checkpoints: the checkpoint's own format is detected,
online FP8 is offered for an unquantized one, and every mismatch or unsupported format is a
clear error before anything loads."""
from __future__ import annotations

import json

import pytest

from pagedllm.engine.arg_utils import EngineArgs
from tests.helpers.quantized_checkpoints import write_fp8_checkpoint


def _quantization(folder: str, requested: str | None = None) -> str | None:
    return EngineArgs(model=folder, quantization=requested).create_engine_config().model_config.quantization


def test_detection_and_online_fp8(tiny_hf_model, tmp_path):
    plain = tiny_hf_model("llama").folder
    assert _quantization(plain) is None and _quantization(plain, "none") is None
    assert _quantization(plain, "fp8") == "fp8"  # quantized at load
    folder = str(tmp_path / "fp8")
    write_fp8_checkpoint(tiny_hf_model("llama"), folder, "block")
    assert _quantization(folder) == "fp8" and _quantization(folder, "fp8") == "fp8"
    with pytest.raises(ValueError, match="fp8-quantized; quantization='none' cannot run it"):
        _quantization(folder, "none")
    with pytest.raises(ValueError, match="needs a GGUF file"):
        _quantization(plain, "gguf")
    with pytest.raises(ValueError, match="quantization='awq' is not supported yet.*fp8, gguf, none"):
        EngineArgs(model=plain, quantization="awq")


def test_unsupported_checkpoint_formats_name_the_supported(tiny_hf_model, tmp_path):
    import shutil

    folder = tmp_path / "bnb"
    shutil.copytree(tiny_hf_model("llama").folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="quantization 'bitsandbytes' is not supported.*formats: fp8"):
        _quantization(str(folder))
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e5m2"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="FP8 format 'e5m2' is not supported"):
        _quantization(str(folder))
