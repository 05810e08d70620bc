"""Exceptions shared by the engine and the server.

They live below both, so the engine raises what the server catches without importing the server.
"""
from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The engine core died: no request can make progress any more."""


class EngineCoreStartError(RuntimeError):
    """The engine core failed, died or timed out while starting; the message is the short reason
    (the CLI prints it as its one error line)."""
