"""The token mask on the logits (xgrammar's kernel) against the bits spelled out, and the grammar
specs the manager compiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pagedllm.sample.token_bitmask import apply_token_bitmask_, token_bitmask_reference
from pagedllm.sampling_params import StructuredOutputsParams
from pagedllm.structured_output.grammars import grammar_spec, validate


@pytest.mark.parametrize("vocab", [64, 100, 49152])
def test_mask_matches_the_bits(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(5, vocab, generator=gen)
    words = -(-vocab // 32)
    bitmask = np.random.default_rng(vocab).integers(-2**31, 2**31, (3, words), dtype=np.int64).astype(np.int32)
    rows = [0, 2, 4]
    want = token_bitmask_reference(logits, bitmask, rows)
    got = logits.clone()
    apply_token_bitmask_(got, bitmask, rows)
    assert torch.equal(got, want)
    assert torch.equal(got[1], logits[1]) and torch.equal(got[3], logits[3])  # rows not listed are untouched


def test_specs():
    assert grammar_spec(StructuredOutputsParams(choice=["a", 'b"c'])).text == 'root ::= "a" | "b\\"c"'
    assert grammar_spec(StructuredOutputsParams(json_object=True)).text == '{"type": "object"}'
    spec = grammar_spec(StructuredOutputsParams(json='{"type": "object", "properties": {"b": {}, "a": {}}}'))
    assert spec.text.index('"b"') < spec.text.index('"a"')  # property order is the output's order
    assert not grammar_spec(StructuredOutputsParams(json={}, disable_any_whitespace=True)).any_whitespace
    validate(grammar_spec(StructuredOutputsParams(regex=r"\d{3}")))
    with pytest.raises(ValueError, match="invalid or unsupported regex"):
        validate(grammar_spec(StructuredOutputsParams(regex="a{2,1}")))
