"""speculative_config: vLLM's dict (or JSON), validated before anything loads."""
from __future__ import annotations

import pytest

from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.spec_decode.config import SpeculativeConfig


def test_ngram_from_dict_and_json():
    c = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
                                     "prompt_lookup_min": 2})
    assert (c.method, c.num_speculative_tokens, c.prompt_lookup_min, c.prompt_lookup_max) == ("ngram", 4, 2, 4)
    assert SpeculativeConfig.from_user('{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, '
                                       '"prompt_lookup_min": 2}') == c


def test_vllm_defaults():
    c = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2})
    assert (c.prompt_lookup_min, c.prompt_lookup_max) == (5, 5)
    assert SpeculativeConfig.from_user({"method": "ngram", "prompt_lookup_max": 3}).prompt_lookup_min == 3
    assert SpeculativeConfig.from_user({"method": "ngram", "prompt_lookup_min": 2}).prompt_lookup_max == 2
    suffix = SpeculativeConfig.from_user({"method": "suffix"})
    assert suffix.num_speculative_tokens == suffix.suffix_decoding_max_tree_depth == 24
    assert SpeculativeConfig.from_user({"model": "[ngram]", "num_speculative_tokens": 3}).method == "ngram"


@pytest.mark.parametrize("value, message", [
    ({"method": "ngram", "num_speculative_tokens": 0}, "num_speculative_tokens must be at least 1"),
    ({"method": "ngram", "num_speculative_tokens": -2}, "num_speculative_tokens must be at least 1"),
    ({"method": "nope"}, "unknown method 'nope'; supported: draft_model, eagle, eagle3, ngram, suffix"),
    ({"num_speculative_tokens": 3}, "unknown method None"),
    ({"method": "medusa", "model": "x"}, "method 'medusa' is not supported yet; supported: draft_model, eagle"),
    ({"method": "eagle3"}, "method 'eagle3' needs \"model\""),
    ({"method": "ngram", "lookahead": 3}, "unknown key(s) 'lookahead'"),
    ({"method": "ngram", "prompt_lookup_min": 4, "prompt_lookup_max": 2}, "prompt_lookup_min <= prompt_lookup_max"),
    ({"method": "ngram", "num_speculative_tokens": "3"}, "num_speculative_tokens must be an integer"),
    ({"method": "ngram", "disable_by_batch_size": 1}, "disable_by_batch_size must be at least 2"),
    ({"method": "suffix", "suffix_decoding_min_token_prob": 2.0}, "min_token_prob must be in [0, 1]"),
    ("{not json", "not valid JSON"),
    ([1, 2], "must be a dict"),
])
def test_bad_configs_are_clear_errors(value, message):
    with pytest.raises(ValueError, match=None) as e:
        SpeculativeConfig.from_user(value)
    assert message in str(e.value)


def test_engine_args_refuse_a_bad_config_before_loading():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        EngineArgs(model="/nonexistent", speculative_config={"method": "nope"})


def test_cli_flag_reaches_the_engine_args():
    from pagedllm.bench.common import engine_kwargs
    from pagedllm.cli.main import build_parser

    args = build_parser().parse_args(["generate", "hi", "--speculative-config",
                                      '{"method": "ngram", "num_speculative_tokens": 3}'])
    spec = EngineArgs(**engine_kwargs(args)).speculative_config
    assert isinstance(spec, SpeculativeConfig) and spec.num_speculative_tokens == 3
    serve = build_parser().parse_args(["serve", "--speculative-config", '{"method": "suffix"}'])
    assert serve.speculative_config == '{"method": "suffix"}'


def test_speculation_switches_off_at_the_batch_size():
    c = SpeculativeConfig.from_user({"method": "ngram", "disable_by_batch_size": 4})
    assert c.speculates(3) and not c.speculates(4)
    assert SpeculativeConfig.from_user({"method": "ngram"}).speculates(10_000)


def test_draft_model_keys():
    c = SpeculativeConfig.from_user({"method": "draft_model", "model": "/m", "num_speculative_tokens": 4})
    assert c.model == "/m" and c.num_lookahead_tokens == 4
    assert SpeculativeConfig.from_user({"method": "ngram"}).num_lookahead_tokens == 0
    with pytest.raises(ValueError, match="needs \"model\""):
        SpeculativeConfig.from_user({"method": "draft_model"})
    with pytest.raises(ValueError, match="are for draft_model, eagle, eagle3, not 'ngram'"):
        SpeculativeConfig.from_user({"method": "ngram", "model": "/m"})
    with pytest.raises(ValueError, match="quantization must be"):
        SpeculativeConfig.from_user({"method": "draft_model", "model": "/m", "quantization": "bitsandbytes"})


def test_rejection_methods_and_synthetic_rates():
    assert SpeculativeConfig.from_user({"method": "ngram"}).rejection_sample_method == "probabilistic"
    c = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 3,
                                     "rejection_sample_method": "synthetic",
                                     "synthetic_acceptance_rates": [0.8, 0.4, 0.4]})
    assert c.synthetic_conditional_rates() == pytest.approx([0.8, 0.5, 1.0])
    by_length = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 4,
                                             "rejection_sample_method": "synthetic",
                                             "synthetic_acceptance_length": 1 + 0.5 + 0.25 + 0.125 + 0.0625})
    assert by_length.synthetic_conditional_rates() == pytest.approx([0.5] * 4)
    full = SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2,
                                        "rejection_sample_method": "synthetic", "synthetic_acceptance_length": 3})
    assert full.synthetic_conditional_rates() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("extra, message", [
    ({"rejection_sample_method": "typical"}, "rejection_sample_method must be one of probabilistic, strict, synthetic"),
    ({"synthetic_acceptance_length": 2.0}, "need \"rejection_sample_method\": \"synthetic\""),
    ({"rejection_sample_method": "synthetic"}, "exactly one of synthetic_acceptance_rates and"),
    ({"rejection_sample_method": "synthetic", "synthetic_acceptance_rates": [0.5]}, "one rate per speculative token (2)"),
    ({"rejection_sample_method": "synthetic", "synthetic_acceptance_rates": [0.5, 0.7]}, "never increase"),
    ({"rejection_sample_method": "synthetic", "synthetic_acceptance_rates": "0.5"}, "must be a list of numbers"),
    ({"rejection_sample_method": "synthetic", "synthetic_acceptance_length": 3.5}, "must be in [1, "),
])
def test_bad_rejection_settings(extra, message):
    with pytest.raises(ValueError) as e:
        SpeculativeConfig.from_user({"method": "ngram", "num_speculative_tokens": 2, **extra})
    assert message in str(e.value)
