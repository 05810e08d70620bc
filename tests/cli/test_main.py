"""The `pagedllm` command's own options: python -m pagedllm, --version, --log-level anywhere."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest


def test_python_dash_m_pagedllm_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "pagedllm", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "generate" in done.stdout


def test_version(capsys) -> None:
    import pagedllm
    from pagedllm.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"pagedllm {pagedllm.__version__}"


@pytest.mark.parametrize("argv, level", [
    (["serve"], "INFO"),  # the default: pagedllm says what it is doing
    (["serve", "--log-level", "DEBUG"], "DEBUG"),  # after the subcommand, as vLLM users write it
    (["--log-level", "error", "serve"], "ERROR"),
    (["--log-level", "ERROR", "generate", "--log-level", "DEBUG", "hi"], "DEBUG"),  # the last one wins
    (["bench", "latency", "--log-level", "WARNING"], "WARNING"),
    (["chat", "--log-level", "WARNING"], "WARNING"),
])
def test_log_level_before_or_after_the_subcommand(argv: list[str], level: str) -> None:
    from pagedllm.cli.main import build_parser

    assert build_parser().parse_args(argv).log_level == level


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("pagedllm")
    saved = root.level, ours.level, list(root.handlers)
    yield
    root.setLevel(saved[0])
    ours.setLevel(saved[1])
    root.handlers[:] = saved[2]


@pytest.mark.usefixtures("restore_logging")
def test_pagedllm_logs_at_info_and_other_libraries_at_warning() -> None:
    from pagedllm.logging_config import configure_logging

    configure_logging("INFO")
    assert logging.getLogger("pagedllm.server.launch").isEnabledFor(logging.INFO)
    assert not logging.getLogger("transformers.tokenization_utils").isEnabledFor(logging.INFO)
    assert logging.getLogger("transformers.tokenization_utils").isEnabledFor(logging.WARNING)
    configure_logging("ERROR")
    assert not logging.getLogger("pagedllm.server.launch").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("some_library.module").isEnabledFor(logging.WARNING)


def test_serve_trust_remote_code_is_an_error_saying_remote_code_never_runs(capsys) -> None:
    from pagedllm.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "/nonexistent/model", "--trust-remote-code"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trust_remote_code=True is not supported") and "never runs code" in err
    assert err.count("\n") == 1
