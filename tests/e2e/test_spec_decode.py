"""Speculative decoding end to end on the default model: outputs as without speculation (greedy,
seeded, logprobs, n > 1, stop strings), under preemption, tiny chunks and prefix caching; drafts
that are always right give k + 1 tokens a step, always wrong exactly one."""
from __future__ import annotations

import pytest

from pagedllm import SamplingParams
from pagedllm.sampling_params import RequestOutputKind

from tests.helpers.spec_oracle import oracle_methods

TEXT = ("The old lighthouse on the northern cape had not guided a ship for nearly forty years, yet the "
        "people of the village still climbed the spiral stairs every autumn to clean the great lens.")
PROMPTS = [
    f"Repeat the following text exactly.\n\n{TEXT}\n\nRepeated text:\n",
    "def add(a, b):\n    return a + b\n\n# The same function, renamed to plus:\ndef plus(a, b):\n",
    f"Extract the first sentence of: {TEXT}\nAnswer:",
    "What is the capital of France?",
    "List the numbers from one to ten, in words:",
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
SUFFIX = {"method": "suffix", "num_speculative_tokens": 8}


def _ids(llm, params=GREEDY, prompts=PROMPTS) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def _spec_stats(llm):
    return llm.llm_engine.engine_core.make_stats().spec_decoding


@pytest.fixture(scope="module")
def reference(smollm2_llm) -> list[list[int]]:
    return _ids(smollm2_llm)


@pytest.fixture(scope="module", params=["ngram", "suffix"])
def spec_llm(request, make_smollm2_llm):
    return make_smollm2_llm(speculative_config=NGRAM if request.param == "ngram" else SUFFIX)


def test_greedy_outputs_equal_without_speculation(spec_llm, reference):
    before = _spec_stats(spec_llm).num_accepted_tokens
    assert _ids(spec_llm) == reference  # a batch of many
    assert [_ids(spec_llm, prompts=[p])[0] for p in PROMPTS] == reference  # one at a time
    stats = _spec_stats(spec_llm)
    assert stats.num_accepted_tokens > before  # the copying prompts do get drafts accepted
    spec_llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


@pytest.mark.parametrize("engine_kwargs", [
    dict(num_gpu_blocks_override=12),  # forced preemption
    dict(max_num_batched_tokens=8),  # prompts in tiny chunks; drafts cut by the budget
    dict(enable_prefix_caching=False),
], ids=["preemption", "tiny-chunks", "no-prefix-cache"])
def test_scheduling_does_not_change_outputs(make_smollm2_llm, reference, engine_kwargs):
    llm = make_smollm2_llm(speculative_config=NGRAM, **engine_kwargs)
    assert _ids(llm) == reference
    assert _ids(llm) == reference  # again: prefix hits on the cached prompts and outputs
    if "num_gpu_blocks_override" in engine_kwargs:
        assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_seeded_sampling_equals_the_plain_decode(smollm2_llm, make_smollm2_llm):
    """Each position draws the noise a step-by-step decode draws, so seeded requests give the
    same tokens with and without speculation, in any batch."""
    params = [SamplingParams(temperature=0.8, top_p=0.95, top_k=50, seed=100 + i, max_tokens=32, ignore_eos=True,
                             repetition_penalty=1.1 if i % 2 else 1.0) for i in range(len(PROMPTS))]
    plain = [o.outputs[0].token_ids for o in smollm2_llm.generate(PROMPTS, params, use_tqdm=False)]
    llm = make_smollm2_llm(speculative_config=NGRAM)
    assert [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params, use_tqdm=False)] == plain
    alone = [llm.generate([p], q, use_tqdm=False)[0].outputs[0].token_ids for p, q in zip(PROMPTS, params)]
    assert alone == plain


def test_logprobs_n_and_prompt_logprobs_as_without_speculation(smollm2_llm, spec_llm):
    params = SamplingParams(temperature=0.0, max_tokens=24, logprobs=3, prompt_logprobs=2, n=2, ignore_eos=True)
    plain = smollm2_llm.generate(PROMPTS[:2], params, use_tqdm=False)
    spec = spec_llm.generate(PROMPTS[:2], params, use_tqdm=False)
    for a, b in zip(plain, spec):
        assert len(b.outputs) == 2
        for x, y in zip(a.outputs, b.outputs):
            assert x.token_ids == y.token_ids
            assert len(y.logprobs) == len(y.token_ids)
            for pa, pb in zip(x.logprobs, y.logprobs):
                assert list(pa) == list(pb)
                assert all(pa[t].logprob == pytest.approx(pb[t].logprob, abs=1e-4) for t in pa)
            assert y.cumulative_logprob == pytest.approx(x.cumulative_logprob, abs=1e-3)
        assert len(b.prompt_logprobs) == len(a.prompt_logprobs)


def test_stop_strings_and_max_tokens_inside_an_accepted_run(smollm2_llm, spec_llm):
    stop = SamplingParams(temperature=0.0, max_tokens=64, stop=["guided"])
    [plain] = smollm2_llm.generate(PROMPTS[:1], stop, use_tqdm=False)
    [spec] = spec_llm.generate(PROMPTS[:1], stop, use_tqdm=False)
    assert plain.outputs[0].finish_reason == spec.outputs[0].finish_reason == "stop"
    assert spec.outputs[0].text == plain.outputs[0].text and spec.outputs[0].token_ids == plain.outputs[0].token_ids
    for max_tokens in (1, 2, 7, 13):
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        assert _ids(spec_llm, params, PROMPTS[:1]) == _ids(smollm2_llm, params, PROMPTS[:1])


def _streamed_lengths(llm, prompt: str, params: SamplingParams) -> list[int]:
    """Tokens per engine step for one request."""
    engine = llm.llm_engine
    engine.add_request("probe", prompt, params)
    lengths = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            lengths.append(len(out.outputs[0].token_ids))
    return lengths


@pytest.mark.parametrize("method, k", [("oracle", 4), ("oracle_wrong", 4), ("oracle", 1)])
def test_always_right_drafts_give_k_plus_1_tokens_always_wrong_one(smollm2_llm, make_smollm2_llm, method, k):
    tokenizer = smollm2_llm.get_tokenizer()
    prompt = PROMPTS[3]
    max_tokens = 1 + 6 * (k + 1)  # the first token, then six whole runs
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    [ref] = smollm2_llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
                                 use_tqdm=False)
    prompt_ids = tuple(tokenizer(prompt).input_ids)
    with oracle_methods({prompt_ids: list(ref.outputs[0].token_ids)}):
        llm = make_smollm2_llm(speculative_config={"method": method, "num_speculative_tokens": k})
        lengths = _streamed_lengths(llm, prompt, params)
        [out] = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
                             use_tqdm=False)
    assert out.outputs[0].token_ids == ref.outputs[0].token_ids
    stats = _spec_stats(llm)
    if method == "oracle":
        assert lengths == [1] + [k + 1] * 6
        assert stats.num_accepted_tokens == stats.num_draft_tokens > 0
        assert stats.mean_acceptance_length == k + 1
    else:
        assert lengths == [1] * max_tokens
        # drafts rejected whole in a row make the request wait 0, 1, 3, 7, 15 steps before the
        # next: of its 29 chances, drafts go to steps 1, 2, 4, 8 and 16 (twice: two requests)
        assert stats.num_accepted_tokens == 0 and stats.num_drafts == 2 * 5


def test_synthetic_acceptance_forces_whole_runs_of_wrong_drafts(smollm2_llm, make_smollm2_llm):
    """The benchmark mode: drafts accepted whatever they are (here all wrong), k + 1 tokens a step."""
    k, prompt = 3, PROMPTS[3]
    max_tokens = 1 + 4 * (k + 1)
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    [ref] = smollm2_llm.generate([prompt], greedy, use_tqdm=False)
    prompt_ids = tuple(smollm2_llm.get_tokenizer()(prompt).input_ids)
    with oracle_methods({prompt_ids: list(ref.outputs[0].token_ids)}):
        llm = make_smollm2_llm(speculative_config={
            "method": "oracle_wrong", "num_speculative_tokens": k, "rejection_sample_method": "synthetic",
            "synthetic_acceptance_rates": [1.0] * k})
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                                output_kind=RequestOutputKind.DELTA)
        assert _streamed_lengths(llm, prompt, params) == [1] + [k + 1] * 4
    stats = _spec_stats(llm)
    assert stats.num_accepted_tokens == stats.num_draft_tokens == 4 * k


def test_pipelined_stepping_gives_the_same_outputs(make_smollm2_llm, reference):
    """The GPU's stepping with speculation (each step launched before the last one's outputs go
    out), forced on here: the same tokens, and an abort between steps loses nothing else."""
    llm = make_smollm2_llm(speculative_config=NGRAM)
    core = llm.llm_engine.engine_core
    core.pipelined = True
    assert _ids(llm) == reference
    engine = llm.llm_engine
    engine.add_request("gone", PROMPTS[0], GREEDY)
    engine.add_request("kept", PROMPTS[1], GREEDY)
    tokens: dict[str, list[int]] = {"gone": [], "kept": []}
    steps = 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens[out.request_id] = out.outputs[0].token_ids
        steps += 1
        if steps == 3:
            engine.abort_request(["gone"])
    assert tokens["kept"] == reference[1]
    assert len(tokens["gone"]) < GREEDY.max_tokens
    engine.scheduler.kv_cache_manager.check_all_free()


def test_metrics(spec_llm):
    names = {m.name: m for m in spec_llm.get_metrics()}
    assert names["pagedllm:spec_decode_num_drafts"].value > 0
    assert names["pagedllm:spec_decode_num_draft_tokens"].value >= names["pagedllm:spec_decode_num_accepted_tokens"].value
    assert len(names["pagedllm:spec_decode_num_accepted_tokens_per_pos"].values) >= 1


def _draft(gguf: str, k: int = 4, **extra) -> dict:
    return {"method": "draft_model", "model": gguf, "num_speculative_tokens": k, **extra}


def test_the_target_as_its_own_draft_gives_k_plus_1_tokens_a_step(make_smollm2_llm, smollm2_gguf):
    """A draft model that is the target (same weights, same numerics): every draft is accepted."""
    k = 3
    llm = make_smollm2_llm(speculative_config=_draft(smollm2_gguf, k, quantization="none"))
    max_tokens = 1 + 5 * (k + 1)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    assert _streamed_lengths(llm, PROMPTS[3], params) == [1] + [k + 1] * 5
    stats = _spec_stats(llm)
    assert stats.num_accepted_tokens == stats.num_draft_tokens == 5 * k


SHORT = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.mark.parametrize("engine_kwargs", [
    dict(num_gpu_blocks_override=8), dict(max_num_batched_tokens=8),
], ids=["preemption", "tiny-chunks"])
def test_quantized_draft_for_the_float32_target(make_smollm2_llm, smollm2_llm, smollm2_gguf, engine_kwargs):
    """The default GGUF's own quantized types draft for its float32 dequantization (the issue's
    CPU pairing): outputs are the float32 model's, and most drafts are accepted; under preemption
    (the draft's state starts over) and with its catch-up cut into tiny chunks."""
    llm = make_smollm2_llm(speculative_config=_draft(smollm2_gguf), **engine_kwargs)
    assert _ids(llm, SHORT, PROMPTS[:3]) == _ids(smollm2_llm, SHORT, PROMPTS[:3])
    stats = _spec_stats(llm)
    assert stats.acceptance_rate > 0.5, stats
    if engine_kwargs.get("num_gpu_blocks_override"):
        assert llm.llm_engine.scheduler.num_preemptions > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_a_draft_with_another_vocabulary_is_refused(make_smollm2_llm, tiny_hf_model):
    tiny = tiny_hf_model("llama")
    with pytest.raises(ValueError, match="vocabulary of 384 tokens and the target 49152"):
        make_smollm2_llm(speculative_config=_draft(tiny.folder))


def test_sampled_drafts_of_a_draft_model(make_smollm2_llm, smollm2_gguf):
    """Sampled requests get drafts sampled from the draft's distribution, checked by the rejection
    rule: most are accepted, and seeded requests give the same tokens alone and in a batch."""
    llm = make_smollm2_llm(speculative_config=_draft(smollm2_gguf))
    params = [SamplingParams(temperature=1.0, top_p=0.95, seed=i, max_tokens=16, ignore_eos=True, logprobs=1)
              for i in range(3)]
    batch = llm.generate(PROMPTS[:3], params, use_tqdm=False)
    alone = [llm.generate([p], q, use_tqdm=False)[0] for p, q in zip(PROMPTS[:3], params)]
    assert [o.outputs[0].token_ids for o in batch] == [o.outputs[0].token_ids for o in alone]
    for out in batch:
        seq = out.outputs[0]
        assert [next(iter(lp)) for lp in seq.logprobs] == seq.token_ids  # logprobs of the run's own tokens
    assert _spec_stats(llm).acceptance_rate > 0.5
