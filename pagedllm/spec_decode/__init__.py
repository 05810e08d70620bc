"""Speculative decoding: proposers guess the next tokens, the target model checks them in one step.

    config.py      SpeculativeConfig, vLLM's `speculative_config` dict, validated (no torch)
    proposer.py    the Proposer interface and the registry of methods
    ngram.py       prompt lookup over the request's own tokens
    suffix.py      frequency-ranked continuations from a suffix trie of this and recent requests
    verifier.py    the target's tokens at every drafted position, and the accepted run (torch)
"""
