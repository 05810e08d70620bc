"""PAGEDLLM_<FIELD> variables fill KernelConfig's defaults, checked in pagedllm/envs.py (the one
module that reads the environment); engine arguments win over them."""
from __future__ import annotations

import pytest

from pagedllm import envs
from pagedllm.config import KernelConfig
from pagedllm.engine.arg_utils import EngineArgs


def test_variables_parse_into_kernel_config_fields():
    got = envs.kernel_config_defaults({
        "PAGEDLLM_ATTENTION_BACKEND": "torch", "PAGEDLLM_CPU_GEMM": "onednn", "PAGEDLLM_TRITON": "0",
        "PAGEDLLM_SKINNY_GEMM": "on", "PAGEDLLM_GEMM_PDL": "false", "PAGEDLLM_FOLD_NORMS": "off",
        "PAGEDLLM_DECODE_ROTARY": "no", "PAGEDLLM_TRITON_SAMPLER": "1", "PAGEDLLM_CPU_KERNELS": "true",
        "PAGEDLLM_CPU_THREADS": "3", "PAGEDLLM_UNRELATED": "x", "PAGEDLLM_CPU_GEMM_X": "y"})
    assert KernelConfig(**got) == KernelConfig(
        attention_backend="torch", cpu_gemm="onednn", triton=False, skinny_gemm="on", gemm_pdl=False,
        fold_norms=False, decode_rotary=False, triton_sampler=True, cpu_kernels=True, cpu_threads=3)
    assert envs.kernel_config_defaults({}) == {}


@pytest.mark.parametrize("env, message", [
    ({"PAGEDLLM_CPU_GEMM": "mkl"}, "PAGEDLLM_CPU_GEMM='mkl' is not one of auto, onednn, torch"),
    ({"PAGEDLLM_SKINNY_GEMM": "1"}, "PAGEDLLM_SKINNY_GEMM='1' is not one of auto, on, off"),
    ({"PAGEDLLM_FOLD_NORMS": "maybe"}, "PAGEDLLM_FOLD_NORMS='maybe' is not a boolean"),
    ({"PAGEDLLM_CPU_THREADS": "two"}, "PAGEDLLM_CPU_THREADS='two' is not an integer"),
    ({"PAGEDLLM_CPU_THREADS": "0"}, "PAGEDLLM_CPU_THREADS.*cpu_threads must be at least 1"),
    ({"PAGEDLLM_ATTENTION_BACKEND": "flash"}, "attention_backend must be one of cpu_paged, torch, triton"),
    ({"PAGEDLLM_TRITON_GEMV": "1"}, "PAGEDLLM_TRITON_GEMV is no longer read; set PAGEDLLM_SKINNY_GEMM"),
    ({"PAGEDLLM_GEMV_PDL": "0"}, "set PAGEDLLM_GEMM_PDL"),
])
def test_bad_values_name_the_variable_and_the_allowed_ones(env, message):
    with pytest.raises(ValueError, match=message):
        envs.kernel_config_defaults(env)


def test_engine_arguments_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("PAGEDLLM_CPU_GEMM", "torch")
    monkeypatch.setenv("PAGEDLLM_CPU_THREADS", "2")
    config = EngineArgs(cpu_threads=1).create_kernel_config()
    assert (config.cpu_gemm, config.cpu_threads) == ("torch", 1)
    monkeypatch.setenv("PAGEDLLM_CPU_GEMM", "fast")
    with pytest.raises(ValueError, match="PAGEDLLM_CPU_GEMM"):  # checked before any model loads
        EngineArgs(model="/nonexistent").create_engine_config()
    monkeypatch.delenv("PAGEDLLM_CPU_GEMM")
    with pytest.raises(ValueError, match="cpu_gemm must be one of"):
        EngineArgs(cpu_gemm="fast").create_kernel_config()


def test_only_envs_reads_the_environment_below_the_cli():
    """Nothing in the package but envs.py (and the CLI layer, through it) reads os.environ."""
    import ast
    import pathlib

    root = pathlib.Path(envs.__file__).parent
    readers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = ast.unparse(node) if isinstance(node, (ast.Attribute, ast.Call)) else ""
            if name in ("os.environ", "os.getenv") or name.startswith(("os.getenv(", "os.environ.get(")):
                readers.append(str(path.relative_to(root)))
    assert sorted(set(readers)) == ["envs.py"]


def test_openmp_spin_count_is_set_unless_the_user_chose_a_wait_policy():
    from pagedllm.envs import OPENMP_SPIN_COUNT, set_openmp_wait_policy

    env: dict[str, str] = {}
    set_openmp_wait_policy(env)
    assert env == {"GOMP_SPINCOUNT": OPENMP_SPIN_COUNT}
    for chosen in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen)
        set_openmp_wait_policy(env)
        assert env == chosen


def test_importing_pagedllm_sets_the_spin_count_before_torch_loads():
    import subprocess
    import sys

    code = ("import os; os.environ.pop('GOMP_SPINCOUNT', None); os.environ.pop('OMP_WAIT_POLICY', None); "
            "import pagedllm, sys; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["10000", "False"]
