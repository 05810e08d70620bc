"""`pagedllm serve`: start the engine core, build the app, run uvicorn, and exit non-zero if the core dies."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from pagedllm.bench.common import add_engine_args, engine_kwargs
from pagedllm.server.settings import ServerSettings

logger = logging.getLogger(__name__)

DEFAULT_SERVED_NAME = "SmolLM2-135M-Instruct"  # the embedded default model


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                        help="HF folder or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
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


def run_server(args: argparse.Namespace) -> int:
    """Serve until interrupted (0) or until the engine core dies (1)."""
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pagedllm.engine.arg_utils import EngineArgs
    from pagedllm.engine.async_llm import AsyncLLM, StatLogger
    from pagedllm.metrics.log import LoggingStatLogger
    from pagedllm.metrics.prometheus import PrometheusStatLogger
    from pagedllm.server.api_server import build_app
    from pagedllm.server.metrics_route import metrics_router

    names = served_names(args)
    settings = ServerSettings(served_model_names=names, api_key=args.api_key,
                              max_waiting_requests=args.max_waiting_requests,
                              max_request_body_bytes=args.max_request_body_bytes,
                              request_body_timeout_s=args.request_body_timeout)
    prometheus = PrometheusStatLogger(names[0])
    stat_loggers: list[StatLogger] = [prometheus]
    if not args.disable_log_stats:
        stat_loggers.append(LoggingStatLogger(args.log_stats_interval))
    engine_args = EngineArgs(model=args.model_tag or args.model, **engine_kwargs(args))
    engine = await AsyncLLM.from_engine_args(engine_args, args.engine_start_timeout, stat_loggers,
                                             engine_core_in_thread=args.engine_core_in_thread)
    if args.chat_template is not None:
        engine.tokenizer.chat_template = load_chat_template(args.chat_template)
    app = build_app(engine, settings, extra_routers=[metrics_router(prometheus)])
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.uvicorn_log_level,
                                           timeout_graceful_shutdown=5))
    watchdog = _EngineWatchdog(engine, server, args)
    engine.on_death(watchdog.on_engine_death)
    logger.warning("pagedllm serving %s on http://%s:%d (pid %d)", names[0], args.host, args.port, os.getpid())
    try:
        await server.serve()
    finally:
        engine.shutdown()
    return watchdog.exit_code


class _EngineWatchdog:
    """What the server does when the engine core dies: restart it (if asked) or exit with status 1
    after a grace period in which /health says 503 and clients get their errors."""

    def __init__(self, engine: Any, server: Any, args: argparse.Namespace) -> None:
        self.engine = engine
        self.server = server
        self.args = args
        self.exit_code = 0
        self._restart_task: asyncio.Task[None] | None = None

    def on_engine_death(self) -> None:
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
        except Exception:
            logger.exception("The engine core could not be restarted; the server exits.")
            self._exit()

    def _exit(self) -> None:
        self.exit_code = 1
        self.server.should_exit = True
