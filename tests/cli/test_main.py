"""The `pagedllm` command's own options: python -m pagedllm, --version, --log-level anywhere."""
from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_pagedllm_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "pagedllm", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "generate" in done.stdout
