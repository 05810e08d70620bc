"""The CPU platform: torch attention, memory from /proc/meminfo, float32 by default."""
from __future__ import annotations

import os

from pagedllm.platforms.base import Platform


class CpuPlatform(Platform):
    device_name = "cpu"

    def attention_backend_name(self) -> str:
        return "torch"

    def available_memory_bytes(self) -> int:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

    def default_dtype(self) -> str:
        return "float32"

    def set_num_threads(self) -> None:
        import torch

        # Use every core the process may run on; torch's default can count hyperthreads or less.
        n = int(os.environ.get("PAGEDLLM_CPU_THREADS", len(os.sched_getaffinity(0))))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
