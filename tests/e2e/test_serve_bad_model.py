"""A bad model in `serve` is the one `error: ...` line that `generate` prints, and a non-zero exit:
checked in the server process before the engine core starts where it can be, and reported in a line
when the engine core fails while starting (issue 17, item 13)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pagedllm.cli.main import main


def _folder_with_config(tmp_path, **config) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _neox(tmp_path) -> str:
    return _folder_with_config(tmp_path, architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox",
                               vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)


def _no_weights(tmp_path, tiny_hf_model) -> str:
    src = tiny_hf_model("llama").folder
    return _folder_with_config(tmp_path, **json.load(open(os.path.join(src, "config.json"))))


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("empty", "has no config.json"),
    ("unsupported", "GPTNeoXForCausalLM"),
    ("no_weights", "no *.safetensors weight files"),
])
@pytest.mark.parametrize("command", ["serve", "generate"])
def test_bad_model_is_one_error_line(command, case, message, tmp_path, tiny_hf_model, capsys) -> None:
    model = {"missing": lambda: str(tmp_path / "nope"),
             "empty": lambda: str(tmp_path),
             "unsupported": lambda: _neox(tmp_path),
             "no_weights": lambda: _no_weights(tmp_path, tiny_hf_model)}[case]()
    argv = ["serve", model] if command == "serve" else ["generate", "--model", model, "hi"]
    capsys.readouterr()  # not what the fixtures printed
    with pytest.raises(SystemExit) as exc:
        main(argv)  # in this process: serve never got as far as starting an engine core
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_engine_core_start_failure_is_a_short_reason(tmp_path, tiny_hf_model, smollm2_tokenizer_dir) -> None:
    """A checkpoint that passes the server's checks but fails to load in the engine core."""
    from safetensors.torch import load_file, save_file

    src = tiny_hf_model("llama").folder
    folder = tmp_path / "model"
    shutil.copytree(src, folder)
    state = load_file(os.path.join(src, "model.safetensors"))
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, str(folder / "model.safetensors"))
    cmd = [sys.executable, "-m", "pagedllm", "serve", str(folder), "--tokenizer", smollm2_tokenizer_dir,
           "--max-model-len", "128", "--num-gpu-blocks-override", "32", "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: The engine core failed to start: ") and "down_proj" in lines[-1], output
    assert "Traceback" not in output and "zmq" not in output, output
