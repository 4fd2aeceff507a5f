"""What the model is asked, and how its reply is read.

The prompt numbers the top passages [1]..[n] and asks for a short answer in the question's
language, each claim followed by the number of the passage that says it, or an explicit "not in
the documents" with the reason. In JSON mode the reply is ``{"found", "answer", "reason"}`` (small
models cite far more reliably when the shape is imposed); in plain-text mode the answer is the
text itself, and a refusal starts with ``NOT_IN_DOCUMENTS:``.

``claims`` cuts an answer into claims, each with the passage numbers written after it; a stretch
of text without a marker is a claim citing nothing, which the check then drops.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..records import Passage

#: The JSON the model must write (``response_format`` json_schema); ``found`` first, so the
#: model decides whether the passages answer before it writes.
SCHEMA = {
    "type": "object",
    "properties": {
        "found": {"type": "boolean"},
        "answer": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["found", "answer", "reason"],
    "additionalProperties": False,
}

#: How a plain-text reply says the documents do not answer.
REFUSAL = "NOT_IN_DOCUMENTS:"

SYSTEM = (
    "You answer questions about documents using only the numbered passages you are given.\n"
    "Rules:\n"
    "- Answer in the language of the question, in one to three short sentences.\n"
    "- End every sentence with the number of the passage that says it, in brackets, like [2].\n"
    "- Copy names, numbers and dates exactly as the passage writes them.\n"
    "- Never add anything the passages do not say.\n"
)
JSON_RULES = (
    'Reply with one JSON object: {"found": true, "answer": "<the answer, each sentence ending '
    'with [n]>", "reason": ""}. If the passages do not answer the question, reply {"found": '
    'false, "answer": "", "reason": "<what the passages lack>"}.'
)
TEXT_RULES = (
    f"If the passages do not answer the question, reply {REFUSAL} followed by what they lack."
)


def passages_block(passages: list[Passage], chars: int = 1200) -> str:
    """The passages as the model reads them: ``[n] (file)`` then the text."""
    parts = []
    for n, passage in enumerate(passages, start=1):
        text = " ".join(passage.text.split())[:chars]
        parts.append(f"[{n}] ({passage.source})\n{text}")
    return "\n\n".join(parts)


def messages(question: str, passages: list[Passage], fmt: str, earlier: str = "") -> list[dict]:
    """The chat messages for reply format ``fmt`` ("json_schema", "json_object" or "text").
    ``earlier``: the previous question, for a follow-up ("Et quand ?") that needs it."""
    rules = TEXT_RULES if fmt == "text" else JSON_RULES
    asked = f"Previous question: {earlier}\n" if earlier else ""
    user = f"Passages:\n\n{passages_block(passages)}\n\n{asked}Question: {question}"
    return [{"role": "system", "content": SYSTEM + rules}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Reply:
    """What the model said: an answer with markers, or that the documents do not answer."""

    found: bool
    answer: str
    reason: str


class Unreadable(ValueError):
    """The reply is neither the JSON asked for nor usable text."""


def _json_object(raw: str) -> dict | None:
    text = raw.strip()
    if text.startswith("```"):  # a fenced block: ```json ... ```
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            value = json.loads(text[start:end + 1])
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def parse(raw: str, fmt: str) -> Reply:
    """The model's reply, or Unreadable. A JSON reply may come from any mode (some models write
    JSON unasked); plain text is accepted in text mode only."""
    data = _json_object(raw)
    if data is not None and ("answer" in data or "found" in data):
        answer = data.get("answer")
        reason = data.get("reason") or ""
        found = data.get("found")
        if not isinstance(answer, str) or not isinstance(reason, str):
            raise Unreadable("the answer or the reason is not text")
        if not isinstance(found, bool):
            found = bool(answer.strip())
        if found and not answer.strip():
            found = False  # "found" with nothing to say: the documents do not answer
        return Reply(found, answer.strip(), " ".join(reason.split()))
    if fmt != "text":
        raise Unreadable("not the JSON object asked for")
    text = raw.strip()
    if not text:
        raise Unreadable("an empty reply")
    at = text.upper().find(REFUSAL)
    if at >= 0:
        return Reply(False, "", " ".join(text[at + len(REFUSAL):].split()))
    return Reply(True, text, "")


_STRING_START = re.compile(r'"answer"\s*:\s*"')


def partial_answer(raw: str, fmt: str) -> str:
    """The answer written so far, for the chat to show while the reply streams: the ``answer``
    string of a JSON reply that may be cut anywhere (escapes decoded), or the raw text."""
    if fmt == "text" and not raw.lstrip().startswith("{"):
        return raw.strip()
    match = _STRING_START.search(raw)
    if not match:
        return ""
    out, i = [], match.end()
    escapes = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "", "b": "", "f": ""}
    while i < len(raw):
        char = raw[i]
        if char == '"':
            break
        if char == "\\":
            if i + 1 >= len(raw):
                break
            code = raw[i + 1]
            if code == "u":
                digits = raw[i + 2:i + 6]
                if len(digits) < 4:
                    break
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    pass
                i += 6
                continue
            out.append(escapes.get(code, code))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


# --- claims -----------------------------------------------------------------------------------

_MARKERS = re.compile(r"\s*((?:\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]\s*)+)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?!\[)")
_LETTER = re.compile(r"\w", re.UNICODE)


@dataclass(frozen=True)
class Claim:
    """One stretch of the answer and the passage numbers written after it (none: uncited)."""

    text: str
    cited: tuple[int, ...]


def claims(answer: str) -> list[Claim]:
    """The answer cut into claims: each sentence, and within a sentence each stretch that ends
    with markers ("X [1] and Y [2]." is two claims). Text without a marker is a claim citing
    nothing; bits without a letter (a full stop after the last marker) are dropped."""
    found = []
    for sentence in _SENTENCE_END.split(answer.strip()):
        at = 0
        for match in _MARKERS.finditer(sentence):
            text = sentence[at:match.start()]
            numbers = tuple(int(n) for n in re.findall(r"\d+", match.group(1)))
            _add(found, text, numbers)
            at = match.end()
        _add(found, sentence[at:], ())
    return found


def _add(found: list[Claim], text: str, cited: tuple[int, ...]) -> None:
    text = text.strip().lstrip(".,;:!?) ").strip()
    if len(_LETTER.findall(text)) < 2:
        if cited and found and not found[-1].cited:
            # "Sentence. [1]": the marker after the full stop belongs to that sentence
            found[-1] = Claim(found[-1].text, cited)
        return
    found.append(Claim(text, tuple(dict.fromkeys(cited))))
