"""--max-waiting-requests against the real engine core: it bounds the sequences that wait for a slot,
counted live, so an idle server takes a burst that fits its slots and refuses what cannot."""
from __future__ import annotations

import asyncio

import httpx2 as httpx
import pytest

from tests.helpers.server_checks import MODEL, server_args, wait_idle
from tests.helpers.server_process import ServerProcess

MAX_WAITING = 16
MAX_NUM_SEQS = 128


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, smollm2_tokenizer_dir: str):
    args = server_args(smollm2_gguf, smollm2_tokenizer_dir, "--max-num-seqs", str(MAX_NUM_SEQS),
                       "--max-waiting-requests", str(MAX_WAITING))
    with ServerProcess(args) as s:
        yield s


def test_an_idle_server_takes_a_burst_that_fits_its_slots(server: ServerProcess) -> None:
    async def one(http: httpx.AsyncClient, i: int) -> int:
        body = {"model": MODEL, "prompt": f"Count to {i}:", "max_tokens": 2, "ignore_eos": True}
        return (await http.post("/v1/completions", json=body)).status_code

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as http:
            return await asyncio.gather(*(one(http, i) for i in range(100)))

    statuses = asyncio.run(burst())
    assert statuses.count(503) == 0 and set(statuses) == {200}
    wait_idle(server)


def test_every_prompt_times_n_counts(server: ServerProcess) -> None:
    url = server.base_url + "/v1/completions"
    too_many = MAX_NUM_SEQS + MAX_WAITING + 1
    for body in ({"prompt": ["Hi"] * too_many}, {"prompt": ["Hi"] * (too_many // 4 + 1), "n": 4}):
        response = httpx.post(url, json={"model": MODEL, "max_tokens": 1, **body}, timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "server_overloaded"
    fits = httpx.post(url, json={"model": MODEL, "max_tokens": 1, "prompt": ["Hi"] * (MAX_NUM_SEQS + MAX_WAITING)},
                      timeout=120)
    assert fits.status_code == 200 and len(fits.json()["choices"]) == MAX_NUM_SEQS + MAX_WAITING
    wait_idle(server)
