"""Cut text into sentences with exact character spans.

Answers are made of whole source sentences, so the cut must be right for French news prose:
"M. Rutte" or "J.-C." do not end a sentence, a closing guillemet belongs to the sentence it
closes, and a line break always ends one (headlines and captions carry no final period).
"""
from __future__ import annotations

import re

#: A sentence ends at . ! ? or … (possibly followed by closing quotes or brackets), when what follows
#: is white space and then something that can start a sentence.
_END = re.compile(r"[.!?…]+[»”\"')\]]*(?=\s+[«“\"'(\[A-ZÀ-ÖØ-Þ0-9-])")
#: Words after which a period is an abbreviation, not a sentence end.
_ABBREVIATIONS = {"m", "mm", "mme", "mmes", "mlle", "dr", "pr", "st", "ste", "mgr", "me",
                  "p", "cf", "etc", "env", "av", "apr", "j.-c", "no", "vol", "art", "min",
                  "mr", "mrs", "ms", "jr", "sr", "vs", "u.s", "gen", "sen", "rep"}
_LAST_WORD = re.compile(r"([\w.-]+)[.]+$")


def _is_abbreviation(text: str, end: int) -> bool:
    """True when the period ending at ``end`` closes an abbreviation or a single initial."""
    match = _LAST_WORD.search(text[max(0, end - 12):end])
    if not match:
        return False
    word = match.group(1).lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in ``text``, white space trimmed, in order."""
    spans: list[tuple[int, int]] = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        cuts = [0]
        for match in _END.finditer(body):
            if match.group().startswith(".") and _is_abbreviation(body, match.start() + 1):
                continue
            cuts.append(match.end())
        cuts.append(len(body))
        for a, b in zip(cuts, cuts[1:]):
            piece = body[a:b]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                trail = len(piece) - len(piece.rstrip())
                spans.append((line_start + a + lead, line_start + b - trail))
        line_start += len(line)
    return spans
