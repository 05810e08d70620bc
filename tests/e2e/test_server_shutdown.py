"""SIGINT (a terminal's Ctrl-C, sent to the whole process group) and SIGTERM (kill, docker stop) stop
`pagedllm serve` and its engine core cleanly: status 0, no traceback, no process left behind
(issue 17, item 8). The default log level says when the server is ready and where (item 10)."""
from __future__ import annotations

import os
import signal
import time

import httpx2 as httpx
import pytest

from tests.helpers.server_process import ServerProcess


def _tiny_server(tiny_hf_model, tokenizer_dir: str, **kwargs) -> ServerProcess:
    args = [tiny_hf_model("llama").folder, "--tokenizer", tokenizer_dir, "--max-model-len", "128",
            "--num-gpu-blocks-override", "32", "--served-model-name", "tiny"]
    return ServerProcess(args, **kwargs)


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["sigint_to_group", "sigterm_to_server"])
def test_signal_stops_server_and_engine_core_cleanly(how: str, tiny_hf_model, smollm2_tokenizer_dir) -> None:
    with _tiny_server(tiny_hf_model, smollm2_tokenizer_dir, log_level=None, new_session=True) as server:
        assert server.proc is not None
        body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 4}
        assert httpx.post(server.base_url + "/v1/completions", json=body, timeout=60).status_code == 200
        core_pid = server.engine_core_pid()
        if how == "sigint_to_group":
            os.killpg(server.proc.pid, signal.SIGINT)
        else:
            os.kill(server.proc.pid, signal.SIGTERM)
        code = server.proc.wait(30)
        log = server.log(100_000)
        assert code == 0, log
        assert "Traceback" not in log and "Error" not in log, log
        assert _gone(core_pid), "the engine core outlived the server"
        assert f"ready on http://127.0.0.1:{server.port}" in log  # INFO by default (item 10)


def test_sigterm_while_starting_stops_cleanly(tiny_hf_model, smollm2_tokenizer_dir) -> None:
    server = _tiny_server(tiny_hf_model, smollm2_tokenizer_dir, new_session=True)
    try:
        proc = server.start()
        core_pid = _wait_for_engine_core(server, proc)  # the model is loading in there now
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log = server.log(100_000)
        assert code == 0, log
        assert "Traceback" not in log, log
        assert _gone(core_pid), "the engine core outlived the server"
    finally:
        server.__exit__(None, None, None)


def _wait_for_engine_core(server: ServerProcess, proc) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, server.log()
        try:
            return server.engine_core_pid()
        except (RuntimeError, FileNotFoundError, ProcessLookupError):
            time.sleep(0.02)
    raise AssertionError("no engine core after 60 s")
