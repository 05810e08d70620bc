"""The engine core's structured-output manager, beside the scheduler.

- Compiling: a request's grammar compiles on a worker thread (compiled grammars cached by their
  spec, the least recently used dropped past MAX_CACHED_GRAMMARS), so a new schema never stalls the
  step loop; until it is compiled the request waits in the queue while the others run (the
  scheduler asks `ready`); one still compiling after COMPILE_TIMEOUT_S fails its request.
- Matching: each request has its own matcher, advanced by the tokens the scheduler keeps
  (`accept`); a matcher that reaches the end of its grammar ends the request ("stop").
- Masking: after each schedule, one token bitmask [rows, ceil(V / 32)] for the scheduled requests
  that sample in the step (`bitmask_for`), which the runner applies to their logits.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from pagedllm.core.grammar_hooks import GrammarState
from pagedllm.core.request import Request
from pagedllm.core.scheduler_output import GrammarOutput, SchedulerOutput
from pagedllm.structured_output.grammars import GrammarCompiler, GrammarSpec, grammar_spec

logger = logging.getLogger(__name__)


# A grammar still compiling after this long fails its request (a pathological schema, e.g. huge
# repetition counts, must not hold a request forever); the compile itself runs on to its end.
COMPILE_TIMEOUT_S = 60.0
# Compiled grammars kept for reuse (a server seeing a new schema per request must not grow without end)
MAX_CACHED_GRAMMARS = 512


@dataclass
class _RequestGrammar:
    compiled: Future[Any]
    submitted: float
    matcher: Any = None  # xgrammar.GrammarMatcher once compiled
    failed: str | None = None  # why it could not compile
    # With a reasoning parser: whether the thinking has ended (the grammar applies from there), and
    # the end of the text seen while it had not (the end marker may straddle tokens and steps)
    answering: bool = True
    tail: str = ""


class StructuredOutputManager:
    def __init__(self, load_tokenizer: Callable[[], Any], vocab_size: int, reasoning_end: str | None = None,
                 load_on_caller: bool = False) -> None:
        """`load_tokenizer`: the model's tokenizer, loaded on the first constrained request (xgrammar
        reads its whole vocabulary once). `reasoning_end`: a reasoning model's end-of-thinking text
        ("</think>"): a constrained request's grammar applies only once it appears (in the prompt,
        or the output), so the model thinks freely and only its answer is constrained.
        `load_on_caller`: call load_tokenizer on the thread that adds the first constrained request
        (it copies a tokenizer that thread keeps using), not on the grammar thread."""
        self._load_tokenizer = load_tokenizer
        self._load_on_caller = load_on_caller
        self._loaded_tokenizer: Any = None
        self.vocab_size = vocab_size
        self._reasoning_end = reasoning_end
        self._tokenizer: Any = None  # the compiler's, kept to read the thinking's end in the text
        self._compiler: GrammarCompiler | None = None
        self._compiler_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[GrammarSpec, Future[Any]] = OrderedDict()  # least recently used first
        self.num_active = 0  # constrained requests not finished
        self._compiling: set[Future[Any]] = set()  # compiles requests wait for

    def add_request(self, request: Request) -> None:
        params = request.sampling_params.structured_outputs
        assert params is not None
        spec = grammar_spec(params)
        if self._load_on_caller and self._loaded_tokenizer is None:
            self._loaded_tokenizer = self._load_tokenizer()
        future = self._cache.get(spec)
        if future is None or (future.done() and future.exception() is not None):
            future = self._cache[spec] = self._executor().submit(self._compile, spec)
            while len(self._cache) > MAX_CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(spec)
        request.structured = _RequestGrammar(future, time.monotonic())
        self.num_active += 1
        if not future.done():
            self._compiling.add(future)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # Two: one slow grammar does not hold up every other new one.
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grammar")
        return self._pool

    def _compile(self, spec: GrammarSpec) -> Any:
        return self._get_compiler().compile(spec)

    def _get_compiler(self) -> GrammarCompiler:
        with self._compiler_lock:  # the pool's threads: the first builds it, the others wait for it
            return self._build_compiler()

    def _build_compiler(self) -> GrammarCompiler:
        if self._compiler is None:
            tokenizer = self._loaded_tokenizer if self._loaded_tokenizer is not None else self._load_tokenizer()
            self._compiler = GrammarCompiler(tokenizer, self.vocab_size)
            self._tokenizer = tokenizer
        return self._compiler

    def warm_up(self) -> None:
        """Build the compiler now, in the background (compiles queue behind it)."""
        future = self._executor().submit(self._get_compiler)
        future.add_done_callback(_log_failure)

    def ready(self, request: Request) -> bool:
        """Whether the request's grammar is compiled (its matcher made); False while compiling. A
        grammar that failed to compile counts as ready: `failure` then says why."""
        state: _RequestGrammar = request.structured
        if state.matcher is not None or state.failed is not None:
            return True
        if not state.compiled.done():
            if time.monotonic() - state.submitted < COMPILE_TIMEOUT_S:
                return False
            state.failed = f"its grammar did not compile within {COMPILE_TIMEOUT_S:.0f} s"
            logger.error("Request %s: %s", request.request_id, state.failed)
            return True
        try:
            compiled = state.compiled.result()
            # The model's EOS always ends a complete grammar (even with ignore_eos: the constraint
            # decides the length); without a stop token xgrammar would end at the first point the
            # grammar could end ("\d+" after one digit).
            stops = set(request.sampling_params.all_stop_token_ids)
            if request.eos_token_id is not None:
                stops.add(request.eos_token_id)
            state.matcher = _new_matcher(compiled, sorted(stops))
        except Exception as e:  # a failed compile, tokenizer or matcher: this request ends, not the core
            state.failed = str(e) or type(e).__name__
            logger.error("Request %s: its grammar is unusable: %s", request.request_id, state.failed)
            return True
        if self._reasoning_end is not None:
            # Text, not token ids: a tokenizer without the marker as one token splits it by context.
            state.answering = self._reasoning_end in self._tokenizer.decode(request.all_token_ids)
        return True

    @staticmethod
    def failure(request: Request) -> str | None:
        state: _RequestGrammar = request.structured
        return state.failed

    def accept(self, request: Request, token_ids: list[int]) -> GrammarState:
        """Advance the request's matcher by the tokens it kept."""
        state: _RequestGrammar = request.structured
        matcher = state.matcher
        if not state.answering:  # still thinking: look for its end; what follows is constrained
            end = self._reasoning_end
            assert end is not None
            for i, token in enumerate(token_ids):
                text = state.tail + self._tokenizer.decode([token])
                if end in text:
                    state.answering = True
                    token_ids = token_ids[i + 1:]
                    break
                state.tail = text[-len(end):]
            else:
                return GrammarState.GOING
        for token in token_ids:
            if not matcher.accept_token(token):
                logger.error("Request %s: token %d is outside its grammar; the request is aborted",
                             request.request_id, token)
                return GrammarState.VIOLATED
        return GrammarState.COMPLETE if matcher.is_terminated() else GrammarState.GOING

    def valid_prefix(self, request: Request, drafts: list[int]) -> list[int]:
        """Speculative drafts the grammar allows, up to the first it refuses (checked on the matcher,
        then rolled back: the verify step's masks and its accepted tokens advance it for real)."""
        state: _RequestGrammar = request.structured
        if state.matcher is None or not state.answering:
            return drafts if state.matcher is not None else []
        matcher = state.matcher
        n = 0
        for token in drafts:
            if not matcher.accept_token(token):
                break
            n += 1
            if matcher.is_terminated():  # a stop token: the grammar is complete, no position follows it
                break
        if n:
            matcher.rollback(n)
        if n and drafts[n - 1] in request.sampling_params.all_stop_token_ids | {request.eos_token_id}:
            n -= 1  # the target samples the stop itself; every position checked then has a live grammar
        return drafts[:n]

    def release(self, request: Request) -> None:
        request.structured = None
        self.num_active -= 1

    def bitmask_for(self, sched: SchedulerOutput, requests: dict[str, Request]) -> GrammarOutput | None:
        """The allowed next tokens of every scheduled constrained request that samples this step."""
        import xgrammar as xgr

        rows: list[tuple[Request, list[int]]] = []  # (request, its drafts this step)
        drafted = sched.scheduled_spec_decode_tokens
        for req_id in sched.num_scheduled_tokens:
            request = requests.get(req_id)
            if request is not None and request.structured is not None and request.structured.matcher is not None \
                    and request.structured.answering and request.num_computed_tokens >= request.num_tokens:
                rows.append((request, drafted.get(req_id, [])))
        if not rows:
            return None
        # One row per sampled position: a request checking k drafts samples k + 1 positions, the
        # j-th after its drafts 1..j (walked on the matcher, then rolled back).
        bitmask = xgr.allocate_token_bitmask(sum(len(d) + 1 for _, d in rows), self.vocab_size)
        row = 0
        for request, drafts in rows:
            matcher = request.structured.matcher
            for token in drafts:
                matcher.fill_next_token_bitmask(bitmask, row)
                row += 1
                matcher.accept_token(token)  # allowed: the scheduler kept only drafts the grammar allows
            matcher.fill_next_token_bitmask(bitmask, row)
            row += 1
            if drafts:
                matcher.rollback(len(drafts))
        return GrammarOutput([r.request_id for r, _ in rows], bitmask.numpy(), [len(d) + 1 for _, d in rows])

    def wait_for_compile(self, timeout: float) -> None:
        """Block until a pending compile finishes (or `timeout` seconds): what the step loop does
        when nothing else can run, instead of spinning (the compile needs the interpreter too)."""
        self._compiling = {f for f in self._compiling if not f.done()}
        if self._compiling:
            wait(self._compiling, timeout=timeout, return_when=FIRST_COMPLETED)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _log_failure(future: Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        logger.error("Structured outputs' compiler could not be prepared: %s", error)


def _new_matcher(compiled: Any, stop_token_ids: list[int]) -> Any:
    import xgrammar as xgr

    # Without stop tokens (ignore_eos) the grammar's end is its termination: the request stops there.
    return xgr.GrammarMatcher(compiled, override_stop_tokens=stop_token_ids or None,
                              terminate_without_stop_token=not stop_token_ids)
