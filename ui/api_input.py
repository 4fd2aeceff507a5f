"""What the ``/ask`` API and the chat accept as a question and a history, checked at the door.

Anything a client can send arrives here as decoded JSON: numbers, nulls, lists nested thousands
deep, strings holding lone UTF-16 surrogates (``"\\ud800"`` is valid JSON but not Unicode text:
no UTF-8 encoder, tokenizer or JSON writer downstream accepts it). Each is refused here with a
message that says what to send, instead of failing deep inside as an internal error.
"""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

#: A UTF-16 surrogate code point: only ever found alone in a Python string decoded from JSON.
_SURROGATE = re.compile("[\ud800-\udfff]")

HISTORY_SHAPE = ("send a list of {role, content} messages, of strings or of "
                 "[question, answer] pairs")


class InputError(ValueError):
    """Input the API cannot take as given; the message (one line) says what to send."""


def kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode text (no lone surrogate)."""
    return _SURROGATE.search(value) is None


def is_blank(value: str) -> bool:
    """Whether ``value`` shows nothing: only spaces, controls and invisible format characters."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "CZ" for ch in value)


def question_text(value: Any) -> str:
    """The question, if it is text; else InputError."""
    if not isinstance(value, str):
        raise InputError(f"the question must be text (a JSON string), not {kind(value)}")
    if not is_text(value):
        raise InputError("the question is not valid Unicode text (it holds a lone surrogate, "
                         "\\ud800-\\udfff); send UTF-8 text")
    return value


def _text_or_none(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where} must be text, not {kind(value)}; {HISTORY_SHAPE}")
    if isinstance(value, str) and not is_text(value):
        raise InputError(f"{where} is not valid Unicode text (it holds a lone surrogate); "
                         "send UTF-8 text")


def check_turn(turn: Any, n: int) -> None:
    """One history item: a string, a message object or a [question, answer] pair of texts."""
    where = f"history item {n}"
    if isinstance(turn, str):
        _text_or_none(turn, where)
    elif isinstance(turn, dict):
        if isinstance(turn.get("content"), str):
            _text_or_none(turn["content"], f"{where}'s content")
        if not isinstance(turn.get("role", ""), str):
            raise InputError(f"{where}'s role must be text; {HISTORY_SHAPE}")
    elif isinstance(turn, (list, tuple)):
        for part in turn:
            _text_or_none(part, where)
    else:
        raise InputError(f"{where} is {kind(turn)}; {HISTORY_SHAPE}")


def parse_history(history: Any) -> list:
    """The API's ``history``: a list of messages or strings, a JSON string of one, or nothing.

    A string that is not JSON is taken as one earlier question, which is what a hand-written
    call most likely means. Items are checked one level deep, so no depth of nesting costs more
    than one look.
    """
    if history is None or history == "":
        return []
    if isinstance(history, str):
        if not is_text(history):
            raise InputError("history is not valid Unicode text (it holds a lone surrogate); "
                             "send UTF-8 text")
        try:
            history = json.loads(history)
        except json.JSONDecodeError:
            return [history]
        except RecursionError:
            raise InputError(f"history is nested too deeply; {HISTORY_SHAPE}") from None
        if isinstance(history, str):
            return [history]
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list, not {kind(history)}; {HISTORY_SHAPE}")
    for n, turn in enumerate(history):
        check_turn(turn, n)
    return list(history)
