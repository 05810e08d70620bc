"""Helpers for sampler tests: build rows and metadata with little boilerplate."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from pagedllm.config import KernelConfig
from pagedllm.platforms.cpu import CpuPlatform
from pagedllm.sample.sampler import Sampler
from pagedllm.sample.sampling_metadata import SamplingMetadata, SamplingRequest, make_sampling_metadata
from pagedllm.sampling_params import SamplingParams

CPU = torch.device("cpu")


def row(prompt: list[int] | None = None, output: list[int] | None = None, eos: int | None = None,
        **params: object) -> SamplingRequest:
    return SamplingRequest(SamplingParams(**params), list(prompt or [0]), list(output or []), eos)


def metadata(rows: list[SamplingRequest], vocab_size: int) -> SamplingMetadata:
    return make_sampling_metadata(rows, vocab_size, CPU)


@pytest.fixture
def make_row() -> Callable[..., SamplingRequest]:
    return row


@pytest.fixture
def make_metadata() -> Callable[[list[SamplingRequest], int], SamplingMetadata]:
    return metadata


@pytest.fixture(params=["cpu_kernel", "torch"])
def make_sampler(request: pytest.FixtureRequest) -> Callable[..., Sampler]:
    """Samplers with the inverse-CDF stage in C++ (kernels/cpu/sampling.cpp, where it is built)
    and with the torch ops that other devices, and CPUs without AVX-512, take: the platform's
    choice under KernelConfig.cpu_kernels on and off."""
    stage = CpuPlatform().inverse_cdf_stage(KernelConfig(cpu_kernels=request.param == "cpu_kernel"))
    if request.param == "cpu_kernel" and stage is None:
        pytest.skip("no C++ sampling stage here")

    def make(**kwargs: object) -> Sampler:
        return Sampler(inverse_cdf=stage, **kwargs)  # type: ignore[arg-type]

    return make
