"""POST /tokenize (a prompt, or chat messages through the template) and POST /detokenize."""
from __future__ import annotations

from pagedllm.server.errors import bad_request
from pagedllm.server.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from pagedllm.server.serving_common import ServingBase


class OpenAIServingTokenization(ServingBase):
    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self.resolve_model(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise bad_request("Give exactly one of 'prompt' or 'messages'.", "prompt")
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
        self.resolve_model(request.model)
        vocab_size = len(self.tokenizer)
        bad = [t for t in request.tokens if t >= vocab_size]
        if bad:
            raise bad_request(f"Token ids must be in [0, {vocab_size}), got {bad[:5]}.", "tokens")
        return DetokenizeResponse(prompt=self.tokenizer.decode(request.tokens))
