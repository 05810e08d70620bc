"""Request fields the server does not declare: refused when they would change the answer, else logged.

OpenAI's API and vLLM's extras name many fields this server does not implement. Ignoring one that
changes what is generated (`functions`, `use_beam_search`, `logits_processors`, ...) would hand
the client a quietly wrong answer, so such a field is a 400 that names it, unless its value asks for
nothing (null, false, an empty list, or what we do anyway). Any other unknown field is ignored with a
warning in the log, as vLLM does, so clients written for other servers keep working.

Each rule also carries the JSON schema of the values it lets through, which the request models put
in the OpenAPI document: the schema then says exactly what the server accepts.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pagedllm.server.errors import bad_request

logger = logging.getLogger(__name__)

_NULL: dict[str, Any] = {"type": "null"}


@dataclass(frozen=True)
class Unsupported:
    accepts: Callable[[Any], bool]  # True for a value that asks for nothing we lack
    schema: dict[str, Any]  # those values as JSON schema
    note: str = ""  # what the 400 adds after "<field> is not supported yet"


def _is_null(value: Any) -> bool:
    return value is None


def _is_empty_list(value: Any) -> bool:
    return value is None or value == []


def _is_empty_dict(value: Any) -> bool:
    return value is None or value == {}


def _is_false(value: Any) -> bool:
    return value is None or value is False


def _one_of(*allowed: Any) -> Callable[[Any], bool]:
    # `type(...) is`: in Python True == 1 and 1.0 == 1, but JSON's true and 1.0 are other values.
    return lambda value: value is None or any(type(value) is type(a) and value == a for a in allowed)


NULL_ONLY = Unsupported(_is_null, _NULL)
EMPTY_LIST = Unsupported(_is_empty_list, {"anyOf": [{"type": "array", "maxItems": 0}, _NULL]})
EMPTY_DICT = Unsupported(_is_empty_dict, {"anyOf": [{"type": "object", "maxProperties": 0}, _NULL]})
FALSE_ONLY = Unsupported(_is_false, {"anyOf": [{"const": False}, _NULL]})

# Both endpoints. vLLM's structured outputs, sampling extras and output options that we lack.
SAMPLING_UNSUPPORTED: dict[str, Unsupported] = {
    **dict.fromkeys(["prompt_logprobs", "truncate_prompt_tokens", "logits_processors"], NULL_ONLY),
    **dict.fromkeys(["allowed_token_ids", "bad_words"], EMPTY_LIST),
    **dict.fromkeys(["use_beam_search", "return_tokens_as_token_ids"], FALSE_ONLY),
    "best_of": Unsupported(_one_of(1), {"anyOf": [{"const": 1}, _NULL]}, "; only 1 is"),
}

COMPLETION_UNSUPPORTED: dict[str, Unsupported] = {
    **SAMPLING_UNSUPPORTED,
    "suffix": Unsupported(_one_of(""), {"anyOf": [{"const": ""}, _NULL]}),
    "prompt_embeds": NULL_ONLY,
    "add_special_tokens": Unsupported(_one_of(True), {"anyOf": [{"const": True}, _NULL]},
                                      "; prompts always get the tokenizer's special tokens"),
}

# OpenAI's deprecated forms of tools and tool_choice
_FUNCTION_CALL = Unsupported(_one_of("none", "auto"), {"anyOf": [{"enum": ["none", "auto"]}, _NULL]},
                             "; use tools and tool_choice")
# A chat template's inputs: each of these changes the prompt the model sees.
TEMPLATE_UNSUPPORTED: dict[str, Unsupported] = {
    "chat_template": NULL_ONLY, "chat_template_kwargs": EMPTY_DICT, "documents": EMPTY_LIST,
}

CHAT_UNSUPPORTED: dict[str, Unsupported] = {
    **SAMPLING_UNSUPPORTED, **TEMPLATE_UNSUPPORTED,
    "functions": Unsupported(_is_empty_list, EMPTY_LIST.schema, "; use tools"), "function_call": _FUNCTION_CALL,
    "echo": FALSE_ONLY, "audio": NULL_ONLY, "reasoning_effort": NULL_ONLY, "web_search_options": NULL_ONLY,
    "modalities": Unsupported(lambda v: v is None or v == ["text"],
                              {"anyOf": [{"type": "array", "items": {"const": "text"}, "minItems": 1,
                                          "maxItems": 1}, _NULL]}, "; only ['text'] is"),
    "add_special_tokens": FALSE_ONLY,
}


def check_extra_fields(extra: Mapping[str, Any], unsupported: Mapping[str, Unsupported], endpoint: str) -> None:
    """400 for the first unsupported field that asks for something; a warning for unknown ones."""
    ignored = []
    for name, value in extra.items():
        rule = unsupported.get(name)
        if rule is None:
            ignored.append(name)
        elif not rule.accepts(value):
            raise bad_request(f"{name} is not supported yet{rule.note}.", name)
    if ignored:
        logger.warning("The following fields were present in the %s request but ignored: %s", endpoint,
                       sorted(ignored))


def document(schema: dict[str, Any], unsupported: Mapping[str, Unsupported]) -> None:
    """Add the rules' fields to a request model's JSON schema, with the values they accept."""
    properties = schema.setdefault("properties", {})
    for name, rule in unsupported.items():
        properties[name] = {**rule.schema, "description": f"Not supported yet{rule.note}."}
