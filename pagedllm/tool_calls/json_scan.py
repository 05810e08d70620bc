"""Finding JSON values and tool-call objects in text that may still be growing.

Tool-call arguments are given as the model wrote them (the exact characters of its JSON value), so
what a stream sends while a value is open is always the start of what the whole response holds; a
re-serialization (json.dumps of a partial parse) would not be. These scanners only locate values:
inside an object the arguments are whatever the model wrote (a grammar makes them valid where
tool_choice requires it).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pagedllm.tool_calls.base import ParsedToolCall

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_STRUCTURE = re.compile(r'["{}\[\]]')
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_WHITESPACE = re.compile(r"\s*")


class NotJson(ValueError):
    """The text at that point cannot be (the start of) what was expected."""


def skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None
    return match.end()


def value_end(text: str, pos: int, final: bool) -> int | None:
    """The end of the JSON value starting at text[pos]; None if the text ends before it does
    (at the end of a final text a number or literal ends there too)."""
    if pos >= len(text):
        return None
    first = text[pos]
    if first == '"':
        match = _STRING.match(text, pos)
        return None if match is None else match.end()
    if first in "{[":
        return _container_end(text, pos)
    match = _SCALAR.match(text, pos)
    if match is not None and (match.end() < len(text) or final):
        return match.end()
    rest = text[pos:]
    if not final and (match is not None or any(word.startswith(rest) for word in ("true", "false", "null"))
                      or re.fullmatch(r"-?\d*\.?\d*(?:[eE][+-]?\d*)?", rest)):
        return None
    raise NotJson(f"not a JSON value at {pos}")


def _container_end(text: str, pos: int) -> int | None:
    depth = 0
    i = pos
    while True:
        match = _STRUCTURE.search(text, i)
        if match is None:
            return None
        i = match.start()
        char = text[i]
        if char == '"':
            string = _STRING.match(text, i)
            if string is None:
                return None
            i = string.end()
            continue
        depth += 1 if char in "{[" else -1
        i += 1
        if depth == 0:
            return i


@dataclass
class ObjectScan:
    """What an object (maybe unfinished) holds: its complete members' value spans, the member whose
    value is still being written, and the object's end once it is closed."""

    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    open_key: str | None = None
    open_start: int = 0
    end: int | None = None
    broken: bool = False  # it stopped being JSON after its members so far (end stays None)


def scan_object(text: str, pos: int, final: bool) -> ObjectScan:
    """Members of the object whose "{" is at text[pos] (NotJson if there is none)."""
    if text[pos] != "{":
        raise NotJson("not an object")
    scan = ObjectScan()
    try:
        _scan_members(text, pos + 1, final, scan)
    except NotJson:
        scan.broken, scan.open_key = True, None
    return scan


def _scan_members(text: str, i: int, final: bool, scan: ObjectScan) -> None:
    while True:
        i = skip_whitespace(text, i)
        if i >= len(text):
            return
        if text[i] == "}":
            scan.end = i + 1
            return
        if text[i] == "," and scan.members:
            i += 1
            continue
        if text[i] != '"':
            raise NotJson("an object member must start with a key")
        key_match = _STRING.match(text, i)
        if key_match is None:
            return
        key = json.loads(key_match.group())
        i = skip_whitespace(text, key_match.end())
        if i >= len(text):
            return
        if text[i] != ":":
            raise NotJson("a key must be followed by ':'")
        i = skip_whitespace(text, i + 1)
        end = value_end(text, i, final)
        if end is None:
            scan.open_key, scan.open_start = key, i
            return
        scan.members[key] = (i, end)
        i = end


# How a run of call objects ended: still open, or where reading stopped (closed or broken)
OPEN = -1


@dataclass
class CallRun:
    calls: list[ParsedToolCall]
    end: int  # OPEN while the text may still add to the run; else where the run stopped
    first_not_a_call: bool = False  # the run's first object is not a call: the text is no tool call


def call_in_object(text: str, pos: int, final: bool, args_keys: tuple[str, ...]) -> tuple[ParsedToolCall | None, int]:
    """The call an object at text[pos] holds, as far as it is decided (None before its name is),
    and the object's end (OPEN while it is being written). NotJson if it is no call: not an object,
    or one that ended or broke without a string "name". An object that breaks after its name stays
    a call, with the arguments it had (its end is then where it broke)."""
    scan = scan_object(text, pos, final)
    name = _name(text, scan)
    if name is None:
        if scan.end is not None or scan.broken:
            raise NotJson("a tool call needs a string name")
        return None, OPEN
    call = ParsedToolCall(name, _arguments(text, scan, args_keys))
    if scan.broken:
        return call, len(text) if final else OPEN
    return call, OPEN if scan.end is None else scan.end


def read_calls(text: str, pos: int, final: bool, args_keys: tuple[str, ...], separator: str,
               closer: str | None = None) -> CallRun:
    """Call objects from text[pos] on, `separator` between them (whitespace around it), up to
    `closer` (an array's "]") or to anything else that is not a call."""
    run = CallRun([], OPEN)
    i = pos
    while True:
        i = skip_whitespace(text, i)
        if i >= len(text):
            return run
        if closer is not None and text[i] == closer:
            run.end = i + 1
            return run
        if run.calls and text[i] == separator:
            i = skip_whitespace(text, i + 1)
            if i >= len(text):
                return run
        try:
            call, end = call_in_object(text, i, final, args_keys)
        except NotJson:
            run.first_not_a_call = not run.calls
            run.end = i
            return run
        if call is not None:
            run.calls.append(call)
        if end == OPEN:
            return run
        i = end


def _name(text: str, scan: ObjectScan) -> str | None:
    span = scan.members.get("name")
    if span is None:
        return None
    name = json.loads(text[span[0]:span[1]])
    if not isinstance(name, str):
        scan.broken = True
        return None
    return name


def _arguments(text: str, scan: ObjectScan, keys: tuple[str, ...]) -> str:
    """The arguments' JSON text as written; a string value holding JSON is given decoded, and a
    scalar, once they are closed; none given is "{}" once the object is closed."""
    for key in keys:
        span = scan.members.get(key)
        if span is not None:
            raw = text[span[0]:span[1]]
            return str(json.loads(raw)) if raw.startswith('"') else raw
        if scan.open_key == key:  # an open object or array: all of it so far is its start
            return text[scan.open_start:] if text.startswith(("{", "["), scan.open_start) else ""
    return "{}" if scan.end is not None else ""
