"""Tell French from English questions, and follow-ups from self-contained questions.

Both are decided by small, documented word lists: the questions are short, so counting function
words is more reliable here than a statistical detector, and costs nothing.
"""
from __future__ import annotations

import re
import unicodedata

_WORDS = re.compile(r"[^\W\d_]+", re.UNICODE)

ENGLISH = {"the", "of", "and", "to", "in", "is", "was", "who", "what", "when", "where", "which",
           "how", "many", "much", "did", "does", "do", "with", "for", "on", "at", "by", "a", "an",
           "are", "were", "has", "have", "about", "from", "his", "her", "their", "why", "whom"}
FRENCH = {"le", "la", "les", "de", "des", "du", "et", "un", "une", "qui", "que", "quel", "quelle",
          "quels", "quelles", "quand", "où", "comment", "combien", "pourquoi", "est", "sont", "a",
          "ont", "en", "au", "aux", "dans", "pour", "sur", "avec", "il", "elle", "l", "d", "qu",
          "ce", "ces", "son", "sa", "ses", "leur", "par", "t"}

#: Openings that mark a question as continuing the previous one ("Et en 2016 ?").
FOLLOW_UP_OPENINGS = ("et ", "et,", "mais ", "alors ", "puis ", "ensuite", "and ", "and,",
                      "what about", "how about", "but ", "then ")
#: Pronouns that point back to something said before.
BACK_REFERENCES = {"il", "elle", "ils", "elles", "lui", "leur", "celui", "celle", "cela", "ça",
                   "he", "she", "him", "her", "they", "them", "it", "that", "this", "there", "y"}


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text.replace("’", "'"))]


def is_english(text: str) -> bool:
    """True when the question reads as English (French wins ties: the corpus is French)."""
    tokens = words(text)
    return sum(t in ENGLISH for t in tokens) > sum(t in FRENCH for t in tokens)


def is_follow_up(question: str) -> bool:
    """True when the question needs the previous turn to be understood.

    It is a follow-up when it opens with a connective ("Et où ... ?"), or when it is short (five
    words or fewer) and either refers back with a pronoun or names nothing (no capitalised word
    after the first).
    """
    text = " ".join(question.replace("’", "'").split()).lower()
    if text.startswith(FOLLOW_UP_OPENINGS):
        return True
    tokens = words(question)
    if len(tokens) > 5:
        return False
    names = [w for w in _WORDS.findall(question)[1:] if w[:1].isupper()]
    return any(t in BACK_REFERENCES for t in tokens) or not names


_APOSTROPHES = {
    "\u2019": "'",  # right single quotation mark (the French typographic apostrophe)
    "\u2018": "'",  # left single quotation mark
    "\u02bc": "'",  # modifier letter apostrophe
    "\u2032": "'",  # prime
    "\u00b4": "'",  # acute accent used as an apostrophe
    "`": "'",
}
_APOSTROPHE_TABLE = str.maketrans(_APOSTROPHES)


def normalize_answer(text: str) -> str:
    """Text as compared with gold answers (by the evaluation and the reader's training labels).

    NFKC (which also turns no-break and narrow no-break spaces into plain spaces), case-fold,
    typographic apostrophes to ``'``, and every run of white space to one space, trimmed.
    """
    text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHE_TABLE)
    return " ".join(text.split())
