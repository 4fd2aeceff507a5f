"""What a question asks for, and whether a sentence or passage can hold it.

Rules in plain French (and English): "combien" asks for a number before the counted noun,
"quel montant" for a sum of money, "quand" for a date or a moment, "qui" for a name the question
does not already give, "qu'a dit X" for reported speech. The names check asks that what a question
names appears near the answer. These are cheap features for the reader and rules for the
extractive answerer; eval/RESULTS.md measures what each one earns.
"""
from __future__ import annotations

import re
import unicodedata

from .language import words
from .lexical import tokenize

_NUMBER = re.compile(r"\d")
_NUMBER_WORDS = {"un", "une", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
                 "dix", "onze", "douze", "vingt", "trente", "quarante", "cinquante", "cent",
                 "mille", "million", "millions", "milliard", "milliards", "moitié", "tiers",
                 "quart", "dizaine", "dizaines", "centaine", "centaines", "milliers"}
_MONTHS = {"janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
           "octobre", "novembre", "décembre", "january", "february", "march", "april", "may",
           "june", "july", "august", "september", "october", "november", "december"}
_WEEKDAYS = {"lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche", "veille",
             "hier", "lendemain"}
#: Question openings that ask for a quantity, a date, or a person's name.
_ASKS_NUMBER = ("combien", "quel pourcentage", "quelle part", "quel nombre", "how many",
                "what percentage", "what share", "what proportion", "what is the total number")
#: Asked after the quantity openings ("quelle part du budget" is a share, not an amount).
_ASKS_MONEY = ("montant", "quelle somme", "budget", "coût", "amount", "how much", "what sum",
               "what is the total", "cost")
#: A sum of money: a figure with a currency or a scale word, or a percentage ("how much of").
_MONEY = re.compile(r"[€$£]\s?\d|\d\s?(?:%|€|\$|£|euros?\b|dollars?\b|francs?\b|fr\b|livres?\b|"
                    r"pounds?\b|yens?\b|roubles?\b|pour ?cent)|\b(?:millions?|milliards?|billions?)\b")
#: A "date" needs a day or a year in figures; "quand" is also answered by a month or a weekday.
_ASKS_DATE = ("à quelle date", "a quelle date", "quelle date", "date précise", "date exacte",
              "jour exact", "what date", "on what date", "exact date")
_ASKS_WHEN = ("quand", "quel jour", "en quelle année", "when", "which day", "what day",
              "in what year", "what year")
_ASKS_NAME = ("qui ", "qui,", "comment s'appelle", "quel est le nom", "de qui", "à qui", "who ",
              "whom ", "what is the name", "what was the name")
#: "Qu'a répondu X ?" asks for words someone said: a quotation or reported speech answers it.
_ASKS_SPEECH = re.compile(r"^(?:qu'|que |what (?:did|does|do) ).{0,60}?\b(?:dit|répondu|déclaré|"
                          r"affirmé|répond|déclare|affirme|say|said|reply|replied|answer|answered|"
                          r"tell|told)\b")
_REPORTED_SPEECH = re.compile(r"[«»“”\"]|\b(?:déclar|dit\b|affirm|répond|ajout|estim|soulign|"
                              r"expliqu|indiqu|assur|annonc|précis|réitér|insist|averti|prévenu)")
_TOKENS = re.compile(r"[^\W_][\w-]*|[^\w\s]", re.UNICODE)
#: Markup pasted with a question ("<script>alert(1)</script> Quel est ...") is not part of what it
#: names: elements whose content is never prose go whole, other tags and comments go and leave
#: their text. Only tag-shaped text counts ("a < b > c" stays).
_HIDDEN_ELEMENTS = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?(?:</\1\s*>|$)",
                              re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<!--.*?(?:-->|$)|</?[A-Za-z][^<>]*>", re.DOTALL)
#: Question words are capitalised whenever they open a sentence, which need not be the text's
#: first word (after markup, a quote, "Bonjour."): they are never names.
_QUESTION_WORDS = frozenset("""
quel quelle quels quelles qui que quoi quand où ou comment combien pourquoi lequel laquelle
lesquels lesquelles est-ce qu'est-ce what who whom whose when where which why how
""".split())

def expected_type(question: str) -> str:
    """What the question asks for: "number", "money", "date", "when", "name", "speech" (what
    someone said) or "" (anything)."""
    text = " ".join(question.replace("’", "'").lower().split()) + " "
    for kind, openings in (("number", _ASKS_NUMBER), ("money", _ASKS_MONEY), ("date", _ASKS_DATE),
                           ("when", _ASKS_WHEN), ("name", _ASKS_NAME)):
        if any(text.startswith(o) or f" {o}" in text[:40] for o in openings):
            return kind
    if _ASKS_SPEECH.search(text):
        return "speech"
    return ""


def strip_markup(text: str) -> str:
    """``text`` without HTML tags, comments and script or style elements (each becomes a space)."""
    if "<" not in text:
        return text
    return _TAGS.sub(" ", _HIDDEN_ELEMENTS.sub(" ", text))


def names_in(text: str) -> list[tuple[str, ...]]:
    """The names of ``text``: runs of capitalised words ("Mark Rutte", "La Haye"), leaving out
    its first word (capitalised anyway), any markup, and question words ("Quel"). Treating
    "Mark Rutte" as one name lets "M. Rutte" or a question about "Rutte" count as the same
    person."""
    tokens = _TOKENS.findall(strip_markup(text).replace("’", "'"))
    names: list[tuple[str, ...]] = []
    run: list[str] = []
    for i, token in enumerate(tokens):
        if (i > 0 and len(token) > 1 and token[:1].isupper()
                and token.lower() not in _QUESTION_WORDS):
            run.append(token)
            continue
        if run:
            names.append(tuple(run))
            run = []
    if run:
        names.append(tuple(run))
    return names


def has_expected_type(kind: str, sentence: str, question: str) -> bool:
    """Whether ``sentence`` holds something of the asked kind (a quantity, a sum of money, a date,
    a name the question does not already give, a quotation or reported speech).

    A sentence without it cannot answer, however similar it is: "Combien de prisonniers ont été
    libérés ?" is not answered by "il a salué la libération de prisonniers".
    """
    if not kind:
        return True
    tokens = set(words(sentence))
    if kind == "money":
        return bool(_MONEY.search(sentence.lower()))
    if kind == "speech":
        return bool(_REPORTED_SPEECH.search(sentence.lower()))
    if kind == "number":
        return _counts_asked_noun(question, sentence)
    if kind == "date":
        return bool(_NUMBER.search(sentence))
    if kind == "when":
        return bool(_NUMBER.search(sentence) or tokens & _MONTHS or tokens & _WEEKDAYS)
    asked = set(words(question))
    return any(not asked & set(words(" ".join(name))) for name in names_in(sentence))


def _is_number(token: str) -> bool:
    return bool(_NUMBER.search(token)) or token.lower() in _NUMBER_WORDS


_COUNTED = re.compile(r"\bcombien d[e'] ?(\w+)(?:[ -](\w+))?")


def counted_noun(question: str) -> str | None:
    """The noun a "combien de ..." question counts ("soldats"), or None."""
    asked = _COUNTED.search(question.replace("’", "'").lower())
    return asked.group(1) if asked else None


def _counted_words(question: str) -> list[list[str]]:
    """The stems a number may stand before: the counted noun and the word right after it, since
    "combien de pays membres" is answered by "32 membres" as well as by "32 pays"."""
    asked = _COUNTED.search(question.replace("’", "'").lower())
    words_ = [asked.group(1), asked.group(2)] if asked else []
    return [stem for stem in (tokenize(w) for w in words_ if w) if stem]


def _counts_asked_noun(question: str, sentence: str) -> bool:
    """For "combien de soldats ...", a number must stand just before "soldats" in the sentence;
    other quantity questions need any number."""
    tokens = re.findall(r"[\w%]+", sentence.replace("’", "'"))
    counted = counted_noun(question)
    if not counted or counted in ("temps", "fois", "jours", "ans", "années", "mois"):
        # "un"/"une" are far more often articles than amounts: a bare one answers no quantity.
        return any(_is_number(t) and t.lower() not in ("un", "une") for t in tokens)
    nouns = _counted_words(question)
    return any(tokenize(t) in nouns and any(_is_number(p) for p in tokens[max(0, i - 3):i])
               for i, t in enumerate(tokens))


def names_missing(question: str, context: str) -> list[str]:
    """Names of a French question that the text around the cited sentence never mentions.

    An answer about "la Pologne" cannot come from a passage that does not name it. A name counts
    as mentioned when its last word is ("Rutte" for "Mark Rutte"). English questions are exempt:
    their names are often spelt differently in French ("Kyiv", "Kiev").
    """
    folded = fold(context)
    return [" ".join(name) for name in names_in(question)
            if len(name[-1]) > 2 and fold(name[-1]) not in folded]


def fold(text: str) -> str:
    """Lower case without accents: questions are typed as "Ecosse" for "Écosse"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
