"""The `pagedllm` command: generate, chat, serve, bench."""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
from types import FrameType
from typing import Any

import pagedllm
from pagedllm.bench.common import add_engine_args, engine_kwargs
from pagedllm.cli.env_defaults import apply_env_defaults
from pagedllm.errors import EngineCoreStartError
from pagedllm.logging_config import DEFAULT_LOG_LEVEL, LOG_LEVELS, configure_logging


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--sampling-seed", type=int, default=None, help="per-request sampling seed")
    p.add_argument("--structured-outputs", default=None, metavar="JSON",
                   help='constrain the output, vLLM\'s structured_outputs as JSON: {"json": SCHEMA}, '
                        '{"regex": "..."}, {"choice": [...]}, {"grammar": "..."} or {"json_object": true}')


def _params(args: argparse.Namespace, **extra: Any) -> Any:
    from pagedllm.sampling_params import SamplingParams, StructuredOutputsParams

    structured = None
    if args.structured_outputs is not None:
        try:
            given = json.loads(args.structured_outputs)
        except json.JSONDecodeError as e:
            raise ValueError(f"--structured-outputs is not valid JSON: {e}.") from None
        if not isinstance(given, dict):
            raise ValueError("--structured-outputs must be a JSON object, e.g. '{\"regex\": \"[0-9]+\"}'.")
        try:
            structured = StructuredOutputsParams(**given)
        except TypeError as e:  # an unknown key
            raise ValueError(f"--structured-outputs: {e}.") from None
    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, seed=args.sampling_seed, structured_outputs=structured, **extra)


def cmd_generate(args: argparse.Namespace) -> None:
    from pagedllm import LLM

    params = _params(args)  # bad sampling arguments fail before the model loads
    llm = LLM(args.model, **engine_kwargs(args))
    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if args.chat_template:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    else:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    for out in outputs:
        print(out.outputs[0].text)


def cmd_chat(args: argparse.Namespace) -> None:
    from pagedllm.engine.arg_utils import EngineArgs
    from pagedllm.engine.engine import LLMEngine
    from pagedllm.sampling_params import RequestOutputKind

    _params(args)  # bad sampling arguments fail before the model loads
    _enable_line_editing()
    engine = LLMEngine.from_engine_args(EngineArgs(model=args.model, **engine_kwargs(args)))
    tokenizer = engine.get_tokenizer()
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print("pagedllm chat — Ctrl-C stops a reply; an empty line or Ctrl-D quits.", file=sys.stderr)
    for turn in itertools.count():
        try:
            user = input("> ")
        except EOFError:
            break
        except KeyboardInterrupt:  # as in a shell: drop the line, ask again
            print()
            continue
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        request_id = f"chat-{turn}"
        engine.add_request(request_id, {"prompt_token_ids": list(ids)},
                           _params(args, output_kind=RequestOutputKind.DELTA))
        messages.append({"role": "assistant", "content": _stream_reply(engine, request_id)})


def _enable_line_editing() -> None:
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401 - importing it gives input() line editing and history


def _stream_reply(engine: Any, request_id: str) -> str:
    """Print the reply as it is generated and return it. Ctrl-C stops it after the current engine
    step (a step is never cut in half) and aborts the request, freeing its KV blocks; what was
    generated so far stays in the conversation."""
    pieces: list[str] = []
    with _CtrlC() as ctrl_c:
        while engine.has_unfinished_requests() and not ctrl_c.pressed:
            for out in engine.step():
                pieces.append(out.outputs[0].text)
                print(out.outputs[0].text, end="", flush=True)
        if ctrl_c.pressed:
            engine.abort_request(request_id)
            print(" [stopped]", end="")
    print()
    return "".join(pieces)


class _CtrlC:
    """Within the block, SIGINT sets `pressed` instead of raising KeyboardInterrupt."""

    def __enter__(self) -> _CtrlC:
        self.pressed = False
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def cmd_serve(args: argparse.Namespace) -> None:
    from pagedllm.server.launch import run_server

    sys.exit(run_server(args))


def _add_log_level(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--log-level before the subcommand or after it (`pagedllm serve --log-level DEBUG`): the
    subcommand's copy keeps the top-level value unless it is given itself."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=argparse.SUPPRESS if default is None else default,
                        help=f"pagedllm's log level (default {DEFAULT_LOG_LEVEL}; other libraries log "
                             "warnings and errors only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedllm", description="High-throughput LLM inference.")
    parser.add_argument("--version", action="version", version=f"pagedllm {pagedllm.__version__}")
    _add_log_level(parser, DEFAULT_LOG_LEVEL)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="complete prompts (arguments, or one per stdin line)")
    gen.add_argument("prompt", nargs="*")
    gen.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=False,
                     help="wrap each prompt as a user message in the model's chat template")
    add_engine_args(gen)
    _sampling_args(gen)
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="interactive chat with the model")
    chat.add_argument("--system", default=None, help="system prompt")
    add_engine_args(chat)
    _sampling_args(chat)
    chat.set_defaults(func=cmd_chat)

    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    from pagedllm.server.launch import add_serve_args

    add_serve_args(serve)
    apply_env_defaults(serve)
    serve.set_defaults(func=cmd_serve)

    bench_parser = sub.add_parser("bench", help="benchmarks")
    bench = bench_parser.add_subparsers(dest="bench", required=True)
    from pagedllm.bench import latency, throughput

    throughput.add_parser(bench)
    latency.add_parser(bench)
    serve_bench = bench.add_parser("serve", help="online serving benchmark against a running server")
    from pagedllm.bench import serve as bench_serve

    bench_serve.add_cli_args(serve_bench)
    serve_bench.set_defaults(func=bench_serve.main)
    for leaf in [gen, chat, serve, bench_parser, *bench.choices.values()]:
        _add_log_level(leaf, None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except EngineCoreStartError as e:  # the core has logged a traceback where one helps
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C while loading or generating: stop without a traceback
        print(file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
