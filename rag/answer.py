"""Pick the source sentences that answer a question, cite them, or abstain.

The answer is extractive: one to three whole sentences copied from the retrieved passages, each
followed by its citation marker. Sentences are scored with what was prepared at index time (one
vector per sentence) plus cheap signals computed now:

* the cosine between the question and the sentence (the model's judgement);
* the share of the question's content words that the sentence contains (names, dates, figures);
* a small bonus when the sentence holds the kind of thing asked for (a number for "combien",
  a date for "quand", a sum for "quel montant", a new name for "qui", reported speech for
  "qu'a répondu");
* the similarity of the passage around it (a short sentence often needs its paragraph).

A second or third sentence is added only when it scores nearly as well and comes from the same
file as the first, so facts from different articles are never merged into one answer. When no
sentence holds what is asked, the best one scores below the abstention threshold, or the passage
around it never names what the question names, the assistant says the documents do not answer,
says why, and shows the closest passages instead.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from .config import SearchSettings
from .index import Index
from .language import words
from .lexical import tokenize
from .records import Citation

#: Weights of the sentence score, set on the project's question set (see eval/RESULTS.md).
LEXICAL_WEIGHT = 0.05
TYPE_BONUS = 0.02
#: Share of the model's judgement given to the passage around the sentence rather than the
#: sentence alone (a short sentence often needs its paragraph to be understood).
CONTEXT_WEIGHT = 0.5
#: A further sentence joins the answer only within this score margin of the best one.
EXTRA_SENTENCE_MARGIN = 0.08
#: Sentences are looked for in this many of the top passages.
CANDIDATE_PASSAGES = 5

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


@dataclass(frozen=True)
class ScoredSentence:
    row: int  # sentence row in the index
    chunk_row: int
    score: float
    typed: bool  # holds the kind of thing the question asks for (see has_expected_type)


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


def names_in(text: str) -> list[tuple[str, ...]]:
    """The names of ``text``: runs of capitalised words ("Mark Rutte", "La Haye"), leaving out
    its first word (capitalised anyway). Treating "Mark Rutte" as one name lets "M. Rutte" or a
    question about "Rutte" count as the same person."""
    tokens = _TOKENS.findall(text.replace("’", "'"))
    names: list[tuple[str, ...]] = []
    run: list[str] = []
    for i, token in enumerate(tokens):
        if i > 0 and len(token) > 1 and token[:1].isupper():
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


def counted_noun(question: str) -> str | None:
    """The noun a "combien de ..." question counts ("soldats"), or None."""
    asked = re.search(r"\bcombien d[e'] ?(\w+)", question.replace("’", "'").lower())
    return asked.group(1) if asked else None


def _counts_asked_noun(question: str, sentence: str) -> bool:
    """For "combien de soldats ...", a number must stand just before "soldats" in the sentence;
    other quantity questions need any number."""
    tokens = re.findall(r"[\w%]+", sentence.replace("’", "'"))
    counted = counted_noun(question)
    if not counted or counted in ("temps", "fois", "jours", "ans", "années", "mois"):
        # "un"/"une" are far more often articles than amounts: a bare one answers no quantity.
        return any(_is_number(t) and t.lower() not in ("un", "une") for t in tokens)
    noun = tokenize(counted)
    return any(tokenize(t) == noun and any(_is_number(p) for p in tokens[max(0, i - 3):i])
               for i, t in enumerate(tokens) if noun)


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


def context_text(index: Index, chunk_row: int) -> str:
    """The passage of a sentence with the passages just before and after it in the same file:
    what a reader of the citation would see."""
    source = index.chunks[chunk_row].source
    rows = [r for r in (chunk_row - 1, chunk_row, chunk_row + 1)
            if 0 <= r < len(index.chunks) and index.chunks[r].source == source]
    return "\n".join(index.chunks[r].text for r in rows)


def score_sentences(index: Index, question: str, query_vector: np.ndarray,
                    passage_rows: list[int]) -> list[ScoredSentence]:
    """Every sentence of the top passages with its support score, best first."""
    candidates = passage_rows[:CANDIDATE_PASSAGES]
    if not candidates:
        return []
    sentence_rows = np.flatnonzero(np.isin(index.sentences[:, 0], candidates))
    if not len(sentence_rows):
        return []
    query_vector = query_vector.astype(np.float32)
    cosines = index.sentence_vectors[sentence_rows] @ query_vector
    context = index.chunk_vectors[index.sentences[sentence_rows, 0]] @ query_vector
    question_terms = set(tokenize(question))
    kind = expected_type(question)
    scored = []
    for srow, cosine, around in zip(sentence_rows.tolist(), cosines.tolist(), context.tolist()):
        text = index.sentence_text(srow)
        chunk_row = int(index.sentences[srow, 0])
        overlap = (len(question_terms & set(tokenize(text))) / len(question_terms)
                   if question_terms else 0.0)
        typed = has_expected_type(kind, text, question)
        score = ((1 - CONTEXT_WEIGHT) * cosine + CONTEXT_WEIGHT * around
                 + LEXICAL_WEIGHT * overlap + (TYPE_BONUS if kind and typed else 0.0))
        scored.append(ScoredSentence(srow, chunk_row, score, typed))
    scored.sort(key=lambda s: (-s.score, s.row))
    return scored


def select_sentences(index: Index, scored: list[ScoredSentence],
                     settings: SearchSettings) -> list[ScoredSentence]:
    """The best sentence, plus close runners-up from the same file, in reading order."""
    if not scored:
        return []
    best = scored[0]
    source = index.chunks[best.chunk_row].source
    chosen = [best]
    for candidate in scored[1:]:
        if (len(chosen) >= settings.max_sentences
                or candidate.score < best.score - EXTRA_SENTENCE_MARGIN):
            break
        if index.chunks[candidate.chunk_row].source == source:
            chosen.append(candidate)
    return sorted(chosen, key=lambda s: s.row)


def citation_for(index: Index, sentence: ScoredSentence, n: int) -> Citation:
    """The citation of one sentence: its file, exact lines and verbatim text."""
    chunk_row, start, end = (int(x) for x in index.sentences[sentence.row])
    chunk = index.chunks[chunk_row]
    start_line = chunk.start_line + chunk.text.count("\n", 0, start - chunk.start)
    end_line = start_line + chunk.text.count("\n", start - chunk.start, end - chunk.start)
    return Citation(n=n, source=chunk.source, start_line=start_line, end_line=end_line,
                    text=index.sentence_text(sentence.row), score=sentence.score)


#: What each kind of question needs, said to the user when no close sentence holds it.
_KIND_NEEDS = {
    "number": ("un nombre", "a number"),
    "money": ("une somme", "a sum of money"),
    "date": ("une date", "a date"),
    "when": ("une date ou un moment", "a date or a time"),
    "name": ("un nom que la question ne donne pas déjà", "a name the question does not give"),
    "speech": ("des propos rapportés", "reported words"),
}


@dataclass(frozen=True)
class Choice:
    """What ``choose_answer`` decided: the sentences to answer with, or why it abstains."""

    sentences: list[ScoredSentence]  # empty: abstain
    support: float  # score of the best sentence of the asked kind
    reason: str = ""  # why it abstains, one sentence in the question's language


def abstention_message(english: bool, reason: str = "") -> str:
    """The answer given instead of one: that the documents do not answer, and why."""
    if english:
        parts = ("The documents do not answer this question.", reason,
                 "Here are the closest passages.")
    else:
        parts = ("Les documents ne répondent pas à cette question.", reason,
                 "Voici les passages les plus proches.")
    return " ".join(p for p in parts if p)


def _no_kind_reason(kind: str, question: str, english: bool) -> str:
    if not kind:
        return "No passage was found." if english else "Aucun passage n'a été trouvé."
    french_need, english_need = _KIND_NEEDS[kind]
    if english:
        return f"None of the closest passages holds {english_need}."
    counted = counted_noun(question)
    if kind == "number" and counted:
        french_need = f"un nombre de {counted}"
    return f"Aucun des passages les plus proches ne contient {french_need}."


def _too_far_reason(support: float, threshold: float, english: bool) -> str:
    if english:
        return (f"The closest passage is too far from the question (score {support:.2f}, "
                f"{threshold:.2f} needed).")
    score, needed = (f"{x:.2f}".replace(".", ",") for x in (support, threshold))
    return (f"Le passage le plus proche est trop éloigné de la question (score {score}, "
            f"{needed} requis).")


def _missing_names_reason(missing: list[str]) -> str:
    quoted = ", ".join(f"« {name} »" for name in missing)
    return f"Le passage le plus proche ne mentionne pas {quoted}."


def abstain_threshold(settings: SearchSettings, english: bool) -> float:
    """The support an answer needs; lower for English questions over French text, whose
    similarities run systematically lower."""
    return settings.abstain_threshold - (settings.cross_lingual_offset if english else 0.0)


def choose_answer(index: Index, question: str, query_vector: np.ndarray,
                  passage_rows: list[int], settings: SearchSettings, english: bool) -> Choice:
    """The sentences to answer with, or the reason to abstain.

    Abstain when no close sentence holds what is asked, when the best one scores below the
    threshold, or when a French question names something that the passage around that sentence
    (the one before and after included) never mentions: the article may name it elsewhere, but
    not where the answer is.
    """
    scored = score_sentences(index, question, query_vector, passage_rows)
    typed = [s for s in scored if s.typed]
    if not typed:
        support = scored[0].score - 1.0 if scored else -1.0
        kind = expected_type(question) if scored else ""
        return Choice([], support, _no_kind_reason(kind, question, english))
    support = typed[0].score
    threshold = abstain_threshold(settings, english)
    if support < threshold:
        return Choice([], support, _too_far_reason(support, threshold, english))
    missing = [] if english else names_missing(question, context_text(index, typed[0].chunk_row))
    if missing:
        return Choice([], support, _missing_names_reason(missing))
    return Choice(select_sentences(index, typed, settings), support)
