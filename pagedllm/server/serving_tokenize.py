"""POST /tokenize (a prompt, or chat messages through the template) and POST /detokenize."""
from __future__ import annotations

from pagedllm.server.protocol import DetokenizeRequest, TokenizeRequest
from pagedllm.server.protocol_responses import DetokenizeResponse, TokenizeResponse
from pagedllm.server.serving_common import ServingBase


class OpenAIServingTokenization(ServingBase):
    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        request.check_supported()
        self.resolve_model(request.model)
        if request.messages is not None:
            rendered = self.render_chat(request.messages, request.add_generation_prompt,
                                        request.continue_final_message)
            token_ids = rendered.token_ids
            if request.add_special_tokens:  # off by default: the template's text already holds them
                token_ids = self.tokenize_text(rendered.text or "", add_special_tokens=True)
        else:
            add_special = True if request.add_special_tokens is None else request.add_special_tokens
            token_ids = self.tokenize_text(request.prompt or "", add_special_tokens=add_special)
        token_strs = None
        if request.return_token_strs:
            token_strs = list(self.tokenizer.convert_ids_to_tokens(token_ids))
        return TokenizeResponse(count=len(token_ids), max_model_len=self.engine.max_model_len,
                                tokens=token_ids, token_strs=token_strs)

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        request.check_extra_fields()
        self.resolve_model(request.model)
        self.check_token_ids(request.tokens, "tokens")
        return DetokenizeResponse(prompt=self.tokenizer.decode(request.tokens))
