"""The offline API, named like vLLM's: LLM(...).generate(...) / .chat(...)."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from pagedllm.engine.arg_utils import EngineArgs
from pagedllm.engine.engine import LLMEngine
from pagedllm.engine.input_processor import PromptType
from pagedllm.metrics.reader import Metric, metrics_from_stats
from pagedllm.outputs import RequestOutput
from pagedllm.sampling_params import SamplingParams

ChatMessage = dict[str, Any]


class LLM:
    """An engine over one model for offline batched generation.

    >>> llm = LLM()                       # the embedded default model
    >>> llm.generate(["Hello"], SamplingParams(max_tokens=8))[0].outputs[0].text
    """

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        # vLLM's arguments that change nothing here are fields too (engine/vllm_compat.py); an
        # unsupported value of one is a ValueError from EngineArgs that names it.
        unknown = set(kwargs) - set(EngineArgs.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Unknown engine arguments: {sorted(unknown)}")
        self.engine_args = EngineArgs(model=model, **kwargs)
        self.llm_engine = LLMEngine.from_engine_args(self.engine_args)
        self._counter = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.llm_engine.get_tokenizer()

    def get_metrics(self) -> list[Metric]:
        """The engine's metrics now (vLLM's `get_metrics`): queue, KV cache and prefix-cache use,
        preemptions and, with speculative decoding, its draft and acceptance counters."""
        return metrics_from_stats(self.llm_engine.engine_core.make_stats())

    def get_default_sampling_params(self) -> SamplingParams:
        """What generate/chat use without sampling params: the model's generation_config.json
        sampling values unless `generation_config="vllm"` (vLLM's behaviour), else the neutral ones."""
        return self.llm_engine.config.model_config.sampling_defaults.sampling_params()

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        prompt_list = _as_prompt_list(prompts)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        params_list = _as_params_list(sampling_params, len(prompt_list))
        request_ids = self._add_all(prompt_list, params_list)
        return self._run(request_ids, use_tqdm)

    def chat(
        self,
        messages: list[ChatMessage] | list[list[ChatMessage]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Generate replies to conversations rendered by the model's chat template (or
        `chat_template`). `tools`: OpenAI-style function tools for templates that show them to
        the model (the text is returned as is; the server's --tool-call-parser reads calls out of
        it); `chat_template_kwargs`: further template variables (e.g. enable_thinking)."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        tokenizer = self.get_tokenizer()
        prompts: list[PromptType] = []
        for conversation in conversations:
            text = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=add_generation_prompt,
                chat_template=chat_template, continue_final_message=continue_final_message, tools=tools,
                **(chat_template_kwargs or {}),
            )
            # The template already holds the special tokens; don't let the tokenizer add a BOS again.
            ids = tokenizer(text, add_special_tokens=False).input_ids
            prompts.append({"prompt": text, "prompt_token_ids": list(ids)})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def _add_all(self, prompts: list[PromptType], params: list[SamplingParams]) -> list[str]:
        """Validate every prompt before queueing any, so a bad one leaves the engine untouched."""
        request_ids = []
        try:
            for prompt, p in zip(prompts, params):
                request_id = str(next(self._counter))
                self.llm_engine.add_request(request_id, prompt, p)
                request_ids.append(request_id)
        except Exception:
            self.llm_engine.abort_request(request_ids)
            raise
        return request_ids

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        wanted = set(request_ids)
        finished: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(request_ids), desc="Processed prompts", disable=not use_tqdm)
        try:
            while len(finished) < len(wanted) and self.llm_engine.has_unfinished_requests():
                for out in self.llm_engine.step():
                    if out.finished and out.request_id in wanted:
                        finished[out.request_id] = out
                        bar.update(1)
        except BaseException:
            self.llm_engine.abort_request([r for r in request_ids if r not in finished])
            raise
        finally:
            bar.close()
        return [finished[r] for r in request_ids]


def _as_prompt_list(prompts: PromptType | Sequence[PromptType]) -> list[PromptType]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    items: list[Any] = list(prompts)
    if items and isinstance(items[0], int):  # one prompt of token ids
        return [items]
    if not items:
        raise ValueError("No prompts given.")
    return items


def _as_params_list(params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if params is None:
        params = SamplingParams()
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"Got {len(params)} sampling params for {n} prompts.")
    return params
