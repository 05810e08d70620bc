"""`pagedllm serve`: start the engine core, build the app, run uvicorn, and exit non-zero if the core dies."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

from pagedllm.bench.common import add_engine_args, engine_kwargs
from pagedllm.server.settings import ServerSettings

logger = logging.getLogger(__name__)

DEFAULT_SERVED_NAME = "SmolLM2-135M-Instruct"  # the embedded default model


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                        help="HF folder, .gguf file or Hugging Face Hub id ORG/NAME (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None,
                        help="names clients use in `model` (default: the model argument)")
    parser.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY`")
    parser.add_argument("--max-waiting-requests", type=int, default=None,
                        help="answer 503 to a request whose sequences (prompts x n) would leave more than this "
                             "many waiting for a slot in the engine")
    parser.add_argument("--max-request-body-bytes", type=int, default=ServerSettings.max_request_body_bytes,
                        help="answer 413 to a larger request body (default: 32 MiB)")
    parser.add_argument("--request-body-timeout", type=float, default=ServerSettings.request_body_timeout_s,
                        help="seconds a request body may take to arrive; then 408 and the connection closes")
    parser.add_argument("--chat-template", default=None,
                        help="a Jinja chat template (file path or the template itself) for models without one, "
                             "or to replace theirs")
    parser.add_argument("--enable-auto-tool-choice", action="store_true",
                        help="parse tool calls out of chat completions whose tool_choice is 'auto' (the default "
                             "when tools are given); needs --tool-call-parser")
    parser.add_argument("--tool-call-parser", default=None, choices=_tool_parser_names(),
                        help="the format of the model's tool calls: hermes (<tool_call> JSON: Qwen2.5/3, Hermes, "
                             "SmolLM3), llama3_json, mistral, pythonic")
    parser.add_argument("--generation-config", default="auto",
                        help="default sampling parameters of requests that do not set them: 'auto' takes the "
                             "model's generation_config.json (temperature, top_p, top_k, min_p, "
                             "repetition_penalty, max_new_tokens as max_tokens), 'vllm' ignores it, a folder "
                             "reads its generation_config.json")
    parser.add_argument("--uvicorn-log-level", default="warning",
                        choices=["critical", "error", "warning", "info", "debug", "trace"])
    parser.add_argument("--disable-log-stats", action="store_true", help="no periodic throughput log line")
    parser.add_argument("--log-stats-interval", type=float, default=5.0)
    parser.add_argument("--engine-start-timeout", type=float, default=900.0, help="seconds to load the model")
    parser.add_argument("--engine-death-grace", type=float, default=2.0,
                        help="seconds the server keeps answering (503) after the engine core dies, then "
                             "exits with status 1")
    parser.add_argument("--restart-engine-on-death", action="store_true",
                        help="when the engine core dies, fail its in-flight requests and start a new one "
                             "instead of exiting")
    parser.add_argument("--engine-core-in-thread", action="store_true",
                        help="run the engine core in a thread of the server instead of its own process "
                             "(for comparison: HTTP and tokenizer work then share the engine's GIL)")
    add_engine_args(parser)


def _tool_parser_names() -> list[str]:
    from pagedllm.tool_calls import TOOL_PARSERS

    return TOOL_PARSERS.names()


def served_names(args: argparse.Namespace) -> list[str]:
    if args.served_model_name:
        return list(args.served_model_name)
    return [args.model_tag or args.model or DEFAULT_SERVED_NAME]


def load_chat_template(value: str) -> str:
    """A path to a template file, or the template text itself (it contains Jinja markup)."""
    if os.path.isfile(value):
        with open(value) as f:
            return f.read()
    if "{" not in value:
        raise ValueError(f"--chat-template {value!r} is neither a file nor a Jinja template.")
    return value


def server_settings(args: argparse.Namespace, model_config: Any) -> Any:
    """The HTTP layer's settings: names, key, load shedding, and the model's sampling defaults."""
    return ServerSettings(served_model_names=served_names(args), api_key=args.api_key,
                          max_waiting_requests=args.max_waiting_requests,
                          max_request_body_bytes=args.max_request_body_bytes,
                          request_body_timeout_s=args.request_body_timeout,
                          sampling_defaults=model_config.sampling_defaults, reasoning_parser=args.reasoning_parser,
                          tool_call_parser=args.tool_call_parser, enable_auto_tool_choice=args.enable_auto_tool_choice)


def run_server(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (0) or until the engine core dies (1)."""
    from pagedllm.engine.arg_utils import EngineArgs

    # First, in this process: a bad model or setting is one clear error before anything starts. This
    # may download a Hub model, so a signal must stop it at once (the event loop's handlers come later).
    with _signals_interrupt():
        try:
            engine_config = EngineArgs(model=args.model_tag or args.model, **engine_kwargs(args)).create_engine_config()
        except KeyboardInterrupt:
            logger.info("Stopped while starting.")
            return 0
    return asyncio.run(_serve(args, engine_config))


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt as SIGINT does, within the block (main thread only)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _serve(args: argparse.Namespace, engine_config: Any) -> int:
    supervisor = _Supervisor(args)
    try:
        return await _start_and_serve(args, engine_config, supervisor)
    except asyncio.CancelledError:
        if not supervisor.stopping:
            raise
        logger.info("Stopped while starting.")
        return 0


async def _start_and_serve(args: argparse.Namespace, engine_config: Any, supervisor: _Supervisor) -> int:
    import uvicorn

    from pagedllm.engine.async_llm import AsyncLLM, StatLogger
    from pagedllm.metrics.log import LoggingStatLogger
    from pagedllm.metrics.prometheus import PrometheusStatLogger
    from pagedllm.server.api_server import build_app
    from pagedllm.server.metrics_route import metrics_router
    from pagedllm.server.uvicorn_server import UvicornServer

    names = served_names(args)
    settings = server_settings(args, engine_config.model_config)
    prometheus = PrometheusStatLogger(names[0])
    stat_loggers: list[StatLogger] = [prometheus]
    if not args.disable_log_stats:
        stat_loggers.append(LoggingStatLogger(args.log_stats_interval))
    engine = AsyncLLM(engine_config, stat_loggers=stat_loggers, engine_core_in_thread=args.engine_core_in_thread)
    await engine.start(args.engine_start_timeout)
    try:
        if args.chat_template is not None:
            engine.tokenizer.chat_template = load_chat_template(args.chat_template)
        app = build_app(engine, settings, extra_routers=[metrics_router(prometheus)])
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.uvicorn_log_level,
                                timeout_graceful_shutdown=5)
        server = UvicornServer(config, ready_message=f"pagedllm serving {names[0]}: ready on "
                               f"http://{args.host}:{args.port} (pid {os.getpid()})")
        supervisor.serving(engine, server)
        await server.serve()
    finally:
        engine.shutdown()
    return supervisor.exit_code


class _Supervisor:
    """How `pagedllm serve` ends. SIGINT and SIGTERM stop it cleanly, with status 0, at any time:
    while starting (the start is cancelled and the engine core stopped) or while serving (uvicorn
    stops gracefully, then the engine core; a second SIGINT stops at once). When the engine core
    dies, the server exits with status 1 after a grace period in which /health says 503 and
    clients get their errors, or starts a new core when asked to; a signal that comes meanwhile
    (systemd signals the whole group, so the core may stop first) still ends with status 0."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.engine_died = False
        self.engine: Any = None
        self.server: Any = None
        self._task = asyncio.current_task()
        self._restart_task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, self._on_signal, sig)

    @property
    def exit_code(self) -> int:
        return 1 if self.engine_died and not self.stopping else 0

    def serving(self, engine: Any, server: Any) -> None:
        self.engine, self.server = engine, server
        engine.on_death(self._on_engine_death)

    def _on_signal(self, sig: int) -> None:
        if self.stopping:
            if self.server is not None:
                self.server.handle_exit(sig, None)  # uvicorn: a second SIGINT forces the exit
            return
        self.stopping = True
        logger.info("%s: shutting down.", signal.Signals(sig).name)
        if self._restart_task is not None:
            self._restart_task.cancel()
        if self.server is None:
            if self._task is not None:
                self._task.cancel()  # still starting: stop the start (AsyncLLM.start stops the core)
        else:
            self.server.should_exit = True

    def _on_engine_death(self) -> None:
        self.engine_died = True
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        if self.args.restart_engine_on_death and not self.args.engine_core_in_thread:
            logger.error("Engine core died; starting a new one.")
            self._restart_task = loop.create_task(self._restart())
            return
        logger.error("Engine core died; the server exits in %.1f s.", self.args.engine_death_grace)
        loop.call_later(self.args.engine_death_grace, self._exit)

    async def _restart(self) -> None:
        try:
            await self.engine.restart(self.args.engine_start_timeout)
            self.engine_died = False
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("The engine core could not be restarted; the server exits.")
            self._exit()

    def _exit(self) -> None:
        self.server.should_exit = True
