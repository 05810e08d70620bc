"""The OpenAI-compatible HTTP server: `build_app(engine, settings)` over any `EngineClient`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EngineClient", "EngineDeadError", "ServerSettings", "build_app"]

if TYPE_CHECKING:
    from pagedllm.errors import EngineDeadError
    from pagedllm.server.api_server import build_app
    from pagedllm.server.engine_client import EngineClient
    from pagedllm.server.settings import ServerSettings

_LAZY = {
    "EngineClient": "pagedllm.server.engine_client",
    "EngineDeadError": "pagedllm.errors",
    "ServerSettings": "pagedllm.server.settings",
    "build_app": "pagedllm.server.api_server",
}


def __getattr__(name: str) -> Any:
    # Lazy, so importing the package (EngineClient, EngineDeadError) does not load FastAPI.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pagedllm.server' has no attribute {name!r}")
