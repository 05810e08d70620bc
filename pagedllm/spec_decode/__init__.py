"""Speculative decoding: proposers guess the next tokens, the target model checks them in one step.

    config.py      SpeculativeConfig, vLLM's `speculative_config` dict, validated (no torch)
    proposer.py    the Proposer interface and the registry of methods
    proposer.py    the Proposer interface (DraftRequest in, drafts out; ProposerRuntime for models)
    matching.py    where the latest tokens occurred before (n-gram and suffix share it)
    ngram.py       prompt lookup over the request's own tokens
    suffix.py      frequency-ranked continuations in this request and recent requests' outputs
    draft_model.py a smaller model's drafts over its own KV cache on the target's blocks
    verifier.py    the target's tokens at every drafted position, and the accepted run (torch)
    rejection.py   the rejection rule for drafts sampled from a distribution q
    speculator.py  the runner's one object: propose, verify, and the draft-length gate
"""
