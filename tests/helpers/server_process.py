"""`pagedllm serve` in a subprocess on a free loopback port, for end-to-end tests with real clients."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`log_level=None` leaves the CLI's default; `new_session=True` puts the server in its own process
    group, so a test can signal the group as a terminal's Ctrl-C does."""

    def __init__(self, args: list[str], startup_timeout_s: float = 240.0, log_level: str | None = "INFO",
                 new_session: bool = False) -> None:
        self.port = free_port()
        self.args = args
        self.startup_timeout_s = startup_timeout_s
        self.log_level = log_level
        self.new_session = new_session
        self._log = tempfile.NamedTemporaryFile(prefix="pagedllm-serve-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, tail: int = 5000) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()[-tail:]

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server without waiting for it (`with` starts it and waits until it is healthy)."""
        level = ["--log-level", self.log_level] if self.log_level else []
        cmd = [sys.executable, "-m", "pagedllm.cli.main", *level, "serve", *self.args,
               "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=self.new_session)
        return self.proc

    def __enter__(self) -> ServerProcess:
        self.start()
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        log = self.log()  # before __exit__ removes the file
        self.__exit__(None, None, None)
        raise RuntimeError(f"server not healthy after {self.startup_timeout_s} s:\n{log}")

    def metrics(self, headers: dict[str, str] | None = None) -> dict[str, float]:
        """GET /metrics as {sample name: value summed over its label sets}."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.base_url + "/metrics", headers=headers).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values

    def engine_core_pid(self) -> int:
        """The engine-core child (spawned by multiprocessing; not its resource tracker)."""
        assert self.proc is not None
        for child in _children(self.proc.pid):
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    return child
        raise RuntimeError("no engine-core child process found")

    def worker_pids(self) -> list[int]:
        """The engine core's worker processes (several ranks: one each)."""
        pids = []
        for child in _children(self.engine_core_pid()):
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    pids.append(child)
        return pids

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        os.unlink(self._log.name)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids.extend(int(p) for p in f.read().split())
    return kids
