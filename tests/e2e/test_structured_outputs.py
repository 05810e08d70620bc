"""Structured outputs on the default model: JSON schemas of many features, any JSON object, regexes,
choices and grammars always give text that parses and validates (jsonschema, re), batched with
unconstrained requests that are not affected; bad constraints are clear errors before any work."""
from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest

from pagedllm import SamplingParams
from pagedllm.sampling_params import StructuredOutputsParams

SCHEMAS = json.load(open(os.path.join(os.path.dirname(__file__), "..", "data", "json_schemas.json")))


def _chat(llm, text: str) -> str:
    return llm.get_tokenizer().apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                   add_generation_prompt=True)


def _params(so: StructuredOutputsParams, **kwargs) -> SamplingParams:
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 200)
    return SamplingParams(structured_outputs=so, **kwargs)


def test_json_schemas_always_validate(smollm2_quantized_llm):
    llm = smollm2_quantized_llm
    prompts = [_chat(llm, f"Answer with a JSON object following this schema: {json.dumps(s)}") for s in SCHEMAS]
    params = [_params(StructuredOutputsParams(json=s)) for s in SCHEMAS]
    outs = llm.generate(prompts, params, use_tqdm=False)
    for schema, out in zip(SCHEMAS, outs):
        completion = out.outputs[0]
        assert completion.finish_reason == "stop", (schema, completion.text)
        jsonschema.validate(json.loads(completion.text), schema)


def test_sampled_json_validates_too(smollm2_quantized_llm):
    llm = smollm2_quantized_llm
    schema = SCHEMAS[9]
    params = _params(StructuredOutputsParams(json=json.dumps(schema)), temperature=1.0, seed=3, n=4)
    [out] = llm.generate([_chat(llm, "Describe a film as JSON.")], params, use_tqdm=False)
    for completion in out.outputs:
        jsonschema.validate(json.loads(completion.text), schema)


@pytest.mark.parametrize("so, check", [
    (StructuredOutputsParams(json_object=True), lambda t: isinstance(json.loads(t), dict)),
    (StructuredOutputsParams(regex=r"[0-9]{3}-[a-z]{2,4}"), lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t)),
    (StructuredOutputsParams(choice=["Paris", "London", "Rome"]), lambda t: t in ("Paris", "London", "Rome")),
    (StructuredOutputsParams(grammar='root ::= "(" digit digit? ", " digit digit? ")"\ndigit ::= [0-9]'),
     lambda t: re.fullmatch(r"\([0-9]{1,2}, [0-9]{1,2}\)", t)),
], ids=["json_object", "regex", "choice", "grammar"])
def test_other_constraints(smollm2_quantized_llm, so, check):
    llm = smollm2_quantized_llm
    question = ("Give the capital of France as a JSON object with one key, capital." if so.json_object
                else "What is the capital of France?")
    [out] = llm.generate([_chat(llm, question)], _params(so, max_tokens=100), use_tqdm=False)
    completion = out.outputs[0]
    assert completion.finish_reason == "stop" and check(completion.text), completion.text


def test_unconstrained_requests_in_the_batch_are_unchanged(smollm2_quantized_llm):
    llm = smollm2_quantized_llm
    prompts = [_chat(llm, "Name a colour."), _chat(llm, "Count to five.")]
    plain = SamplingParams(temperature=0.0, max_tokens=24)
    alone = [o.outputs[0].token_ids for o in llm.generate(prompts, plain, use_tqdm=False)]
    mixed = llm.generate([prompts[0], _chat(llm, "Pick one."), prompts[1]],
                         [plain, _params(StructuredOutputsParams(choice=["a", "b"])), plain], use_tqdm=False)
    assert [mixed[0].outputs[0].token_ids, mixed[2].outputs[0].token_ids] == alone
    assert mixed[1].outputs[0].text in ("a", "b")


def test_logprobs_are_of_the_constrained_distribution(smollm2_quantized_llm):
    """Tokens the grammar forbids have no probability: every top token with a finite logprob at the
    first position starts one of the choices."""
    llm = smollm2_quantized_llm
    [out] = llm.generate([_chat(llm, "Yes or no?")], _params(StructuredOutputsParams(choice=["yes", "no"]), logprobs=5),
                         use_tqdm=False)
    first = out.outputs[0].logprobs[0]
    finite = [v.decoded_token for v in first.values() if v.logprob > float("-inf")]
    assert finite and all(t and ("yes".startswith(t) or "no".startswith(t)) for t in finite), first


@pytest.mark.parametrize("so, message", [
    (dict(json={"type": "object", "properties": {"a": {"type": "nonsense"}}}), "invalid or unsupported JSON schema"),
    (dict(json="{not json"), "structured_outputs.json is not valid JSON"),
    (dict(regex="(unclosed"), "invalid or unsupported regex"),
    (dict(grammar="root ::= "), "invalid or unsupported grammar"),
    (dict(choice=[]), "non-empty list of non-empty strings"),
    (dict(json={"type": "object"}, regex="a"), "exactly one of json, regex, choice, grammar and json_object"),
])
def test_bad_constraints_are_clear_errors(smollm2_quantized_llm, so, message):
    with pytest.raises(ValueError) as e:
        smollm2_quantized_llm.generate(["hi"], _params(StructuredOutputsParams(**so)), use_tqdm=False)
    assert message in str(e.value)
    assert not smollm2_quantized_llm.llm_engine.has_unfinished_requests()


@pytest.mark.parametrize("engine_kwargs", [
    {"num_gpu_blocks_override": 12, "max_num_seqs": 8},
    {"async_scheduling": True},
    {"speculative_config": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2}},
], ids=["preemption", "async-scheduling", "speculation"])
def test_constraints_hold_under_engine_features(make_smollm2_llm, engine_kwargs):
    """Preempted constrained requests resume their grammar where they were; asynchronous scheduling
    steps synchronously while constrained requests run; speculation drafts only for the others.
    Unconstrained neighbours give the tokens they give alone."""
    llm = make_smollm2_llm(quantization="gguf", **engine_kwargs)
    schemas = SCHEMAS[:6]
    prompts = [_chat(llm, f"Answer as JSON following {json.dumps(s)}") for s in schemas]
    plain_prompts = [_chat(llm, "Repeat: one two three one two three one two three"), _chat(llm, "Count to ten.")]
    plain = SamplingParams(temperature=0.0, max_tokens=40)
    alone = [o.outputs[0].token_ids for o in llm.generate(plain_prompts, plain, use_tqdm=False)]
    outs = llm.generate(prompts + plain_prompts, [_params(StructuredOutputsParams(json=s)) for s in schemas] +
                        [plain, plain], use_tqdm=False)
    for schema, out in zip(schemas, outs):
        jsonschema.validate(json.loads(out.outputs[0].text), schema)
    assert [o.outputs[0].token_ids for o in outs[len(schemas):]] == alone
    stats = llm.llm_engine.engine_core.make_stats()
    if "num_gpu_blocks_override" in engine_kwargs:
        assert stats.num_preemptions > 0
    if "speculative_config" in engine_kwargs:
        assert stats.spec_decoding.num_drafts > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def test_grammar_waits_for_the_end_of_thinking(smollm2_tokenizer_dir):
    """With a reasoning parser a constrained request is unmasked while it thinks; the grammar takes
    over after </think> (even split across steps), or at once when the prompt already closed it."""
    from transformers import AutoTokenizer

    from pagedllm.core.grammar_hooks import GrammarState
    from pagedllm.core.request import Request
    from pagedllm.core.scheduler_output import CachedRequestData, SchedulerOutput
    from pagedllm.structured_output.manager import StructuredOutputManager

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    manager = StructuredOutputManager(lambda: tok, 49152, reasoning_end="</think>")

    def request(req_id: str, prompt: str) -> Request:
        params = SamplingParams(structured_outputs=StructuredOutputsParams(choice=["yes", "no"]))
        params.all_stop_token_ids = {tok.eos_token_id}
        r = Request(req_id, tok.encode(prompt), params)
        manager.add_request(r)
        while not manager.ready(r):
            manager.wait_for_compile(0.1)
        r.num_computed_tokens = r.num_tokens  # as if scheduled to sample
        return r

    def masked(r: Request) -> bool:
        r.num_computed_tokens = r.num_tokens  # scheduled to sample its next token
        sched = SchedulerOutput([], CachedRequestData(), {r.request_id: 1}, 1, set())
        return manager.bitmask_for(sched, {r.request_id: r}) is not None

    thinking, closed = request("a", "Question? <think>"), request("b", "<think>\n\n</think>\n\n")
    assert not masked(thinking) and masked(closed)
    ids = tok.encode("Hmm, let me see. </think>", add_special_tokens=False)
    for i in range(0, len(ids), 2):  # two tokens a step: the marker straddles steps
        assert manager.accept(thinking, ids[i:i + 2]) is GrammarState.GOING
        thinking.append_output_token_ids(ids[i:i + 2])
    assert masked(thinking)
    yes, maybe = tok.encode("yes", add_special_tokens=False), tok.encode("maybe", add_special_tokens=False)
    assert manager.valid_prefix(thinking, maybe) == [] and manager.valid_prefix(thinking, yes) == yes
    assert manager.valid_prefix(thinking, [*yes, tok.eos_token_id]) == yes  # the stop is the target's to sample
    assert manager.accept(thinking, yes) is GrammarState.GOING  # valid_prefix left the matcher where it was
    assert manager.accept(thinking, [tok.eos_token_id]) is GrammarState.COMPLETE
    assert manager.accept(closed, tok.encode("maybe", add_special_tokens=False)) is GrammarState.VIOLATED


def test_edge_cases_of_constraints(smollm2_quantized_llm):
    """An emoji choice is reachable; ignore_eos does not cut a regex at its first possible end;
    min_tokens with a constraint is refused (it could forbid the only tokens a complete grammar allows)."""
    llm = smollm2_quantized_llm
    [emoji] = llm.generate([_chat(llm, "Thumbs up or down?")], _params(StructuredOutputsParams(choice=["👍", "👎"])),
                           use_tqdm=False)
    assert emoji.outputs[0].text in ("👍", "👎") and emoji.outputs[0].finish_reason == "stop"
    [digits] = llm.generate([_chat(llm, "Write the number one hundred and twenty three in digits.")],
                            _params(StructuredOutputsParams(regex=r"[0-9]{2,5}"), ignore_eos=True, max_tokens=12),
                            use_tqdm=False)
    assert re.fullmatch(r"[0-9]{2,5}", digits.outputs[0].text), digits.outputs[0].text
    with pytest.raises(ValueError, match="min_tokens cannot be combined with structured_outputs"):
        _params(StructuredOutputsParams(choice=["a"]), min_tokens=2)


@pytest.mark.parametrize("method", ["oracle", "oracle_wrong"])
def test_drafts_are_checked_against_the_grammar(smollm2_quantized_llm, make_smollm2_llm, method):
    """Drafts of a constrained request go as far as its grammar allows and are verified under its
    masks: drafts that are the constrained answer are accepted (several tokens a step), drafts
    outside the grammar are never scheduled; the output is the one without speculation."""
    from tests.helpers.spec_oracle import oracle_methods

    llm = smollm2_quantized_llm
    schema = SCHEMAS[0]
    prompt = _chat(llm, f"Answer as JSON following {json.dumps(schema)}")
    params = _params(StructuredOutputsParams(json=schema))
    [ref] = llm.generate([prompt], params, use_tqdm=False)
    prompt_ids = tuple(llm.get_tokenizer()(prompt, add_special_tokens=False).input_ids)
    with oracle_methods({prompt_ids: list(ref.outputs[0].token_ids)}):
        spec = make_smollm2_llm(quantization="gguf", speculative_config={"method": method,
                                                                         "num_speculative_tokens": 4})
        [out] = spec.generate([prompt], params, use_tqdm=False)
    assert out.outputs[0].token_ids == ref.outputs[0].token_ids
    stats = spec.llm_engine.engine_core.make_stats().spec_decoding
    if method == "oracle":
        assert stats.num_accepted_tokens == stats.num_draft_tokens > 0
    else:  # every draft is the answer's token plus one: never the target's, and cut where the grammar refuses
        assert stats.num_accepted_tokens == 0 and stats.num_draft_tokens < 4 * stats.num_drafts
