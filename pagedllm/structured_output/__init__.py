"""Structured outputs: constrained decoding by grammars (xgrammar), managed beside the scheduler."""
