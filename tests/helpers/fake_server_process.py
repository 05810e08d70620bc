"""The HTTP app over the fake engine, served by uvicorn in a process of its own on a loopback port.

For tests that time the server's event loop: in a thread of the test process, the server would
share the GIL with the client that measures it. `python -m tests.helpers.fake_server_process PORT
[--word-tokenizer]` serves until terminated.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx2 as httpx

from tests.helpers.server_process import free_port

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeServerProcess:
    def __init__(self, *args: str, startup_timeout_s: float = 60.0) -> None:
        self.port = free_port()
        self.args = args
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServerProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.fake_server_process", str(self.port),
                                      *self.args], cwd=_REPO, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the fake server exited with {self.proc.returncode}"
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the fake server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # it may be deep in a tokenizer call: no graceful shutdown to wait for
            self.proc.wait()


def main() -> None:
    import uvicorn

    from pagedllm.server.api_server import build_app
    from pagedllm.server.settings import ServerSettings
    from tests.helpers.fake_engine import FakeEngine, make_tokenizer, make_word_tokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--word-tokenizer", action="store_true")
    args = parser.parse_args()
    tokenizer = make_word_tokenizer() if args.word_tokenizer else make_tokenizer()
    app = build_app(FakeEngine(tokenizer=tokenizer), ServerSettings())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
