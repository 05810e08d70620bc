"""POST /tokenize (a prompt, or chat messages through the template) and POST /detokenize.

Both answer with a prebuilt JSON body: a 10 MB prompt has millions of token ids, and FastAPI's own
serialization of them would run on the event loop; here it runs in the text worker.
"""
from __future__ import annotations

from typing import Any

from fastapi import Response

from pagedllm.server.protocol import DetokenizeRequest, TokenizeRequest
from pagedllm.server.protocol_responses import DetokenizeResponse, TokenizeResponse
from pagedllm.server.serving_common import ServingBase
from pagedllm.server.utils import json_response


class OpenAIServingTokenization(ServingBase):
    async def tokenize(self, request: TokenizeRequest) -> Response:
        request.check_supported()
        self.resolve_model(request.model)
        token_ids = await self._token_ids(request)
        return await self.text.run(len(token_ids), self._tokenize_response, token_ids, request.return_token_strs)

    async def _token_ids(self, request: TokenizeRequest) -> list[int]:
        if request.messages is not None:
            tools = [tool.to_template_dict() for tool in request.tools] if request.tools else None
            rendered = await self.render_chat(request.messages, request.add_generation_prompt,
                                              request.continue_final_message, fit_context=False, tools=tools)
            if not request.add_special_tokens:  # off by default: the template's text already holds them
                return rendered.token_ids
            text, add_special = rendered.text or "", True
        else:
            text = request.prompt or ""
            add_special = True if request.add_special_tokens is None else request.add_special_tokens
        encoded = await self.text.encode(text, add_special)
        assert encoded.token_ids is not None  # no limit asked
        return encoded.token_ids

    def _tokenize_response(self, token_ids: list[int], return_token_strs: bool) -> Response:
        token_strs: Any = None
        if return_token_strs:
            token_strs = list(self.tokenizer.convert_ids_to_tokens(token_ids))
        # model_construct: the ids are ours, already ints; validating millions of them again is waste.
        return json_response(TokenizeResponse.model_construct(
            count=len(token_ids), max_model_len=self.engine.max_model_len, tokens=token_ids, token_strs=token_strs))

    async def detokenize(self, request: DetokenizeRequest) -> Response:
        request.check_extra_fields()
        self.resolve_model(request.model)
        self.check_token_ids(request.tokens, "tokens")
        text = await self.text.decode(request.tokens)
        return await self.text.run(len(text), json_response, DetokenizeResponse(prompt=text))
