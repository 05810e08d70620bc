"""What a request's constraint compiles to, with xgrammar: the grammar's source text (its cache
key), its validation before anything is scheduled, and its compilation against the tokenizer.

    json         a JSON schema (dict or text)        -> xgrammar's JSON-schema grammar
    json_object  any JSON object                      -> the schema {"type": "object"}
    regex        a regular expression                 -> xgrammar's regex grammar
    choice       one of a list of strings             -> an EBNF alternation of the literals
    grammar      an EBNF grammar (xgrammar's dialect)  -> itself
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pagedllm.sampling_params import StructuredOutputsParams


@dataclass(frozen=True)
class GrammarSpec:
    """A constraint reduced to a hashable key: the compile cache's and the compile call's input."""

    kind: str  # json, regex or grammar (a choice becomes a grammar, json_object a schema)
    text: str  # the schema as canonical JSON, the regex, or the EBNF
    any_whitespace: bool = True


def grammar_spec(params: StructuredOutputsParams) -> GrammarSpec:
    kind = params.kind
    any_whitespace = not params.disable_any_whitespace
    if kind == "json":
        schema = params.json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"structured_outputs.json is not valid JSON: {e}.") from None
        if not isinstance(schema, dict):
            raise ValueError("structured_outputs.json must be a JSON schema object.")
        return GrammarSpec("json", json.dumps(schema), any_whitespace)  # property order is output order
    if kind == "json_object":  # an object, as OpenAI's json_object mode (xgrammar's built-in JSON allows any value)
        return GrammarSpec("json", '{"type": "object"}', any_whitespace)
    if kind == "regex":
        assert params.regex is not None
        return GrammarSpec("regex", params.regex)
    if kind == "choice":
        assert params.choice is not None
        # ensure_ascii=False: xgrammar reads a \uXXXX surrogate pair as two characters no token matches
        literals = (json.dumps(c, ensure_ascii=False) for c in params.choice)
        return GrammarSpec("grammar", "root ::= " + " | ".join(literals))
    assert params.grammar is not None
    return GrammarSpec("grammar", params.grammar)


def validate(spec: GrammarSpec, source: str = "structured_outputs") -> None:
    """ValueError saying what is wrong with the constraint (a malformed schema, an unsupported
    regex feature, a grammar that does not parse), without the tokenizer: cheap, for the frontend.
    `source`: where the constraint came from, for the message."""
    import xgrammar as xgr

    try:
        if spec.kind == "json":
            xgr.Grammar.from_json_schema(spec.text, any_whitespace=spec.any_whitespace)
        elif spec.kind == "regex":
            xgr.Grammar.from_regex(spec.text)
        elif spec.kind == "grammar":
            xgr.Grammar.from_ebnf(spec.text)
    except Exception as e:  # xgrammar raises RuntimeError / its own errors with the parser's message
        what = {"json": "JSON schema", "regex": "regex", "grammar": "grammar"}[spec.kind]
        raise ValueError(f"{source}: invalid or unsupported {what}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    """The parser's message, without xgrammar's log prefix ("[12:00:00] /path/file.cc:123: ")."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", line)


class GrammarCompiler:
    """Compiles specs against one tokenizer (xgrammar keeps its own cache of compiled grammars too)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int] | None = None) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self.vocab_size = vocab_size

    def compile(self, spec: GrammarSpec) -> Any:
        """xgrammar's CompiledGrammar of the spec (ValueError if it does not compile)."""
        try:
            if spec.kind == "json":
                return self._compiler.compile_json_schema(spec.text, any_whitespace=spec.any_whitespace)
            if spec.kind == "regex":
                return self._compiler.compile_regex(spec.text)
            return self._compiler.compile_grammar(spec.text)
        except Exception as e:
            raise ValueError(f"structured_outputs: the {spec.kind} constraint does not compile: {_first_line(e)}") \
                from None
