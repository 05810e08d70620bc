"""The manager's bookkeeping without a model: compile timeouts fail only their request, the cache
of compiled grammars keeps the most recently used, and the active count follows add and release."""
from __future__ import annotations

import threading
import time

import pagedllm.structured_output.manager as manager_module
from pagedllm.core.request import Request
from pagedllm.sampling_params import SamplingParams, StructuredOutputsParams
from pagedllm.structured_output.manager import StructuredOutputManager


def _request(req_id: str, regex: str) -> Request:
    return Request(req_id, [1, 2], SamplingParams(structured_outputs=StructuredOutputsParams(regex=regex)))


def test_a_grammar_that_compiles_too_long_fails_its_request(monkeypatch):
    monkeypatch.setattr(manager_module, "COMPILE_TIMEOUT_S", 0.05)
    release = threading.Event()
    manager = StructuredOutputManager(lambda: None, 64)
    monkeypatch.setattr(manager, "_compile", lambda spec: release.wait(5) and None)
    slow = _request("slow", "a+")
    manager.add_request(slow)
    assert not manager.ready(slow)
    time.sleep(0.1)
    assert manager.ready(slow) and "did not compile within" in manager.failure(slow)
    release.set()
    manager.release(slow)
    assert manager.num_active == 0
    manager.shutdown()


def test_the_cache_keeps_the_most_recently_used(monkeypatch):
    monkeypatch.setattr(manager_module, "MAX_CACHED_GRAMMARS", 2)
    manager = StructuredOutputManager(lambda: None, 64)
    compiled = []
    monkeypatch.setattr(manager, "_compile", lambda spec: compiled.append(spec.text) or spec)
    for i, regex in enumerate(["a", "b", "a", "c", "a", "b"]):
        request = _request(str(i), regex)
        manager.add_request(request)
        request.structured.compiled.result()
        manager.release(request)
    assert compiled == ["a", "b", "c", "b"]  # "a" stayed (used again), "b" was dropped for "c"
    manager.shutdown()
