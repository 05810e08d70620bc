"""EAGLE and EAGLE-3 heads (random weights, the published checkpoint layouts) drafting for a tiny
llama target: the target's greedy tokens whatever the head (HF's generate), under preemption, tiny
chunks and prefix caching; and the head's first draft is what HF's own layers compute from the
target's hidden states (an EAGLE-3 head with a draft vocabulary mapped by d2t)."""
from __future__ import annotations

import random

import pytest
import torch

from pagedllm import LLM, SamplingParams
from tests.helpers.eagle_heads import head_weights, write_eagle_head
from tests.helpers.hf_oracle import hf_greedy

EOS_IDS = {2, 5}
AUX_LAYERS = [0, 1, 1]  # the tiny target has two layers; the published default (2, L/2, L-3) needs more


def _prompts(seed: int, n: int = 5) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 384) for _ in range(rng.randint(3, 40))] for _ in range(n)]


@pytest.fixture(scope="module")
def target(tiny_hf_model):
    return tiny_hf_model("llama")


@pytest.fixture(scope="module", params=["eagle", "eagle3"])
def head(request, target, tmp_path_factory):
    method = request.param
    extra = {} if method == "eagle" else {"draft_vocab_size": 128, "aux_layers": AUX_LAYERS}
    folder = write_eagle_head(str(tmp_path_factory.mktemp(method)), target.hf_model.config, method, **extra)
    return method, folder


@pytest.fixture(scope="module")
def reference(target) -> list[list[int]]:
    return [hf_greedy(target.hf_model, p, 20, EOS_IDS) for p in _prompts(3)]


def _llm(target, head, tokenizer, k: int = 3, **kwargs) -> LLM:
    method, folder = head
    kwargs.setdefault("num_gpu_blocks_override", 128)
    return LLM(target.folder, tokenizer=tokenizer, dtype="float32", max_model_len=256, block_size=16,
               speculative_config={"method": method, "model": folder, "num_speculative_tokens": k}, **kwargs)


@pytest.mark.parametrize("engine_kwargs", [{}, {"num_gpu_blocks_override": 12}, {"max_num_batched_tokens": 16}],
                         ids=["plain", "preemption", "tiny-chunks"])
def test_greedy_outputs_are_the_targets(target, head, reference, smollm2_tokenizer_dir, engine_kwargs):
    llm = _llm(target, head, smollm2_tokenizer_dir, **engine_kwargs)
    params = SamplingParams(temperature=0, max_tokens=20)
    for _ in range(2):  # the second round hits the prefix cache
        outs = llm.generate([{"prompt_token_ids": p} for p in _prompts(3)], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == reference
    stats = llm.llm_engine.engine_core.make_stats().spec_decoding
    assert stats.num_drafts > 0
    llm.llm_engine.scheduler.kv_cache_manager.check_all_free()


def _reference_drafts(target, method: str, folder: str, prompt: list[int], first: int, k: int) -> list[int]:
    """The head's k drafts after the prefill, densely with HF's layers (eager attention): entry p
    takes token p + 1 and the target's feature of position p, and each draft's entry the head's own
    output of the entry before."""
    from safetensors.torch import load_file
    from transformers.models.llama.modeling_llama import (
        LlamaAttention,
        LlamaDecoderLayer,
        LlamaMLP,
        LlamaRMSNorm,
        LlamaRotaryEmbedding,
    )

    hf = target.hf_model
    cfg = hf.config
    cfg._attn_implementation = "eager"
    w = load_file(f"{folder}/model.safetensors")

    def norm(name: str) -> LlamaRMSNorm:
        m = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        m.weight.copy_(w[name])
        return m

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in w.items() if k.startswith(prefix)}

    if method == "eagle":
        layer = LlamaDecoderLayer(cfg, 0)
        layer.load_state_dict(part("layers.0."), strict=False)
        layer.input_layernorm = torch.nn.Identity()
    else:
        wide = type(cfg)(**{**cfg.to_dict(), "hidden_size": 2 * cfg.hidden_size,
                            "head_dim": cfg.hidden_size // cfg.num_attention_heads})
        wide._attn_implementation = "eager"
        attn = LlamaAttention(wide, 0)
        attn.o_proj = torch.nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        attn.load_state_dict(part("midlayer.self_attn."))
        mlp = LlamaMLP(cfg)
        mlp.load_state_dict(part("midlayer.mlp."))

    def head(tokens: list[int], feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs [1, n, H], logits over the target's vocabulary at the last entry)."""
        n = len(tokens)
        embeds = hf.model.embed_tokens(torch.tensor([tokens]))
        pe = LlamaRotaryEmbedding(cfg)(embeds, torch.arange(n)[None])
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        if method == "eagle":
            h = layer(torch.cat([embeds, feats], -1) @ w["fc.weight"].T, attention_mask=mask, position_embeddings=pe)
            h = h[0] if isinstance(h, tuple) else h
            return h, hf.lm_head(h[0, -1])
        x = torch.cat([norm("midlayer.input_layernorm.weight")(embeds), norm("midlayer.hidden_norm.weight")(feats)],
                      -1)
        h = feats + attn(x, position_embeddings=pe, attention_mask=mask)[0]
        h = h + mlp(norm("midlayer.post_attention_layernorm.weight")(h))
        draft_logits = norm("norm.weight")(h[0, -1]) @ w["lm_head.weight"].T
        logits = torch.full((cfg.vocab_size,), float("-inf"))
        logits[torch.arange(len(draft_logits)) + w["d2t"]] = draft_logits
        return h, logits

    with torch.no_grad():
        out = hf(torch.tensor([prompt]), output_hidden_states=True)
        if method == "eagle":
            feats = out.hidden_states[-1]  # after the final norm
        else:  # each tapped layer's input, through fc
            feats = torch.cat([out.hidden_states[i] for i in AUX_LAYERS], -1) @ w["fc.weight"].T
        tokens, drafts = [*prompt[1:], first], []
        for _ in range(k):
            h, logits = head(tokens, feats)
            drafts.append(int(logits.argmax()))
            tokens.append(drafts[-1])
            feats = torch.cat([feats, h[:, -1:]], 1)
    return drafts


@pytest.mark.parametrize("k", [1, 3])
def test_drafts_are_the_heads_own(target, head, smollm2_tokenizer_dir, k):
    method, folder = head
    llm = _llm(target, head, smollm2_tokenizer_dir, k=k)
    engine = llm.llm_engine
    for seed, prompt in enumerate(_prompts(7)):
        req_id = f"r{seed}"
        engine.add_request(req_id, {"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=8))
        engine.step()  # the prefill: the first token, then the head's drafts
        request = engine.scheduler.get_request(req_id)
        [first] = request.output_token_ids
        assert request.spec_token_ids == _reference_drafts(target, method, folder, prompt, first, k)
        engine.abort_request(req_id)
        while engine.has_unfinished_requests():
            engine.step()


def test_drafts_after_verify_steps_are_the_heads_own(target, head, smollm2_tokenizer_dir):
    """After steps that checked drafts (accepted or not), the head has read exactly the target's
    features of the accepted positions: its drafts are the dense reference's on the whole sequence
    (the speculator's gate may shorten them: compared as far as they go)."""
    method, folder = head
    llm = _llm(target, head, smollm2_tokenizer_dir, k=3)
    engine = llm.llm_engine
    prompt = _prompts(11)[0]
    engine.add_request("r", {"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=30))
    checked = 0
    for _ in range(8):
        engine.step()
        request = engine.scheduler.get_request("r")
        if request is None:
            break
        drafts = request.spec_token_ids
        if drafts:
            sequence = [*prompt, *request.output_token_ids]
            want = _reference_drafts(target, method, folder, sequence[:-1], sequence[-1], 3)
            assert drafts == want[:len(drafts)]
            checked += 1
    assert checked >= 3


def test_eagle3_drafts_only_the_draft_vocabulary(target, head, smollm2_tokenizer_dir):
    method, folder = head
    if method != "eagle3":
        pytest.skip("EAGLE-3 only")
    llm = _llm(target, head, smollm2_tokenizer_dir, k=3)
    d2t = head_weights({**target.hf_model.config.to_dict(), "draft_vocab_size": 128}, "eagle3")["d2t"]
    allowed = set((torch.arange(128) + d2t).tolist())
    seen: list[int] = []
    scheduler = llm.llm_engine.scheduler
    set_drafts = scheduler._set_drafts

    def record(drafts):
        for d in drafts.values():
            seen.extend(d)
        set_drafts(drafts)

    scheduler._set_drafts = record
    llm.generate([{"prompt_token_ids": p} for p in _prompts(3)], SamplingParams(temperature=0, max_tokens=20),
                 use_tqdm=False)
    assert seen and set(seen) <= allowed


def test_heads_that_cannot_draft_for_the_target_are_refused(tiny_hf_model, head, smollm2_tokenizer_dir,
                                                            tmp_path):
    method, folder = head
    qwen = tiny_hf_model("qwen3")
    with pytest.raises(ValueError, match=f"the {method} method drafts for Llama-family targets"):
        LLM(qwen.folder, tokenizer=smollm2_tokenizer_dir, speculative_config={"method": method, "model": folder})
    import json

    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({**cfg, "hidden_size": 2 * cfg["hidden_size"]}))
    llama = tiny_hf_model("llama")
    with pytest.raises(ValueError, match="reads hidden states of 128 features; the target's have 64"):
        LLM(llama.folder, tokenizer=smollm2_tokenizer_dir, speculative_config={"method": method, "model": str(wide)})


def test_no_features_held_while_speculation_is_off(target, head, reference, smollm2_tokenizer_dir):
    """At disable_by_batch_size nothing is proposed: the head holds no features of those steps, and
    the outputs are still the target's."""
    method, folder = head
    llm = LLM(target.folder, tokenizer=smollm2_tokenizer_dir, dtype="float32", max_model_len=256, block_size=16,
              num_gpu_blocks_override=128, speculative_config={"method": method, "model": folder,
                                                               "num_speculative_tokens": 3, "disable_by_batch_size": 2})
    proposer = llm.llm_engine.executor.worker.runner.speculator.proposer
    held_while_off = []
    observe = proposer.observe_target

    def recording(req_ids, starts, counts, hidden, keep=True):
        observe(req_ids, starts, counts, hidden, keep)
        if not keep:
            held_while_off.append(sum(f.num_rows for f in proposer._features.values()))

    proposer.observe_target = recording
    outs = llm.generate([{"prompt_token_ids": p} for p in _prompts(3)], SamplingParams(temperature=0, max_tokens=20),
                        use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == reference
    assert held_while_off and max(held_while_off) == 0


def test_a_long_prompt_in_small_chunks_is_read_chunk_by_chunk(target, head, smollm2_tokenizer_dir):
    """A prompt of many chunks (more than the features a request may hold): the head reads each
    chunk as the target computes it, so its first drafts are still the dense reference's."""
    method, folder = head
    llm = _llm(target, head, smollm2_tokenizer_dir, k=3, max_num_batched_tokens=16)
    engine = llm.llm_engine
    prompt = [6 + (i * 37) % 370 for i in range(100)]
    engine.add_request("long", {"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=8))
    request = None
    while request is None or not request.output_token_ids:
        engine.step()
        request = engine.scheduler.get_request("long")
    proposer = engine.executor.worker.runner.speculator.proposer
    assert request.spec_token_ids == _reference_drafts(target, method, folder, prompt, request.output_token_ids[0], 3)
    assert max(f.num_rows for f in proposer._features.values()) <= 16
    engine.abort_request("long")
    while engine.has_unfinished_requests():
        engine.step()
