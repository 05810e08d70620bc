"""Exceptions shared by the engine and the server.

They live below both, so the engine raises what the server catches without importing the server.
"""
from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The engine core died: no request can make progress any more."""
