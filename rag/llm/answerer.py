"""The generative answerer: the user's LLM writes, the index checks, the reader stands by.

``LlmAnswerer.stream(question, passages, context)`` yields the answer text as the model writes it
(for the chat), then a ``Draft``; ``answer`` returns that Draft alone (CLI, API, evaluation).

The Draft is one of:

* the model's answer cut to the claims a sentence of their cited passage supports
  (``rag/llm/verify.py``), renumbered [1], [2]... with each citation on that sentence's lines
  (``answerer: "llm"``);
* an abstention with the model's own reason, when it says the passages do not answer;
* the offline reader's answer (``answerer: "reader"``) with a ``note`` saying why, when the
  server fails (down, timeout, HTTP error, reply cut off at ``max_tokens``, unreadable) or no
  claim survives the check.

``verified`` lists every claim with its outcome, kept or dropped, in both cases.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping

from ..answerer import AnswerContext, Answerer, Draft, abstention_message, cite
from ..config import LlmSettings
from ..records import Citation, Passage
from . import prompt
from .client import LlmClient, LlmFailure
from .verify import Checked, check_claims

log = logging.getLogger(__name__)

#: The note shown with the reader's answer, per failure, (French, English).
NOTES = {
    "down": ("Le serveur du modèle ne répond pas ({detail}) : voici la réponse du lecteur "
             "hors ligne.", "The model's server does not answer ({detail}): here is the offline "
             "reader's answer."),
    "timeout": ("Le modèle a mis trop de temps ({detail}) : voici la réponse du lecteur hors "
                "ligne.", "The model took too long ({detail}): here is the offline reader's "
                "answer."),
    "http": ("Le serveur du modèle a renvoyé une erreur ({detail}) : voici la réponse du lecteur "
             "hors ligne.", "The model's server returned an error ({detail}): here is the "
             "offline reader's answer."),
    "length": ("La réponse du modèle a été coupée ({detail}) : voici la réponse du lecteur hors "
               "ligne.", "The model's answer was cut off ({detail}): here is the offline "
               "reader's answer."),
    "garbage": ("La réponse du modèle est illisible ({detail}) : voici la réponse du lecteur "
                "hors ligne.", "The model's answer is unreadable ({detail}): here is the offline "
                "reader's answer."),
    "unsupported": ("Aucune affirmation du modèle n'est confirmée par le passage qu'elle cite : "
                    "voici la réponse du lecteur hors ligne.", "No claim of the model is "
                    "supported by the passage it cites: here is the offline reader's answer."),
}
#: The reason of an abstention when the model gave none.
NO_REASON = ("Le modèle ne trouve pas la réponse dans les passages.",
             "The model finds no answer in the passages.")


def note(kind: str, english: bool, detail: str = "") -> str:
    return NOTES[kind][english].format(detail=detail)


def verified_json(checked: list[Checked], numbers: Mapping[int, int]) -> list[dict]:
    """The ``verified`` list of the answer JSON: every claim, kept or not, and why."""
    out = []
    for i, item in enumerate(checked):
        support = item.support
        out.append({"claim": item.claim.text, "cited": list(item.claim.cited),
                    "supported": item.supported, "citation": numbers.get(i),
                    "score": round(support.score, 4) if support else 0.0,
                    "why": "" if item.supported else (support.why if support else "")})
    return out


class LlmAnswerer:
    """Answers through an OpenAI-compatible server (see the module doc)."""

    name = "llm"

    def __init__(self, settings: LlmSettings, fallback: Answerer, client: LlmClient | None = None,
                 check: bool = True) -> None:
        """``check`` asks the server for its models now, so an unreachable server or an unknown
        model is reported at startup (LlmUnavailable, exit status 2 in the CLI)."""
        self.settings = settings
        self.fallback = fallback
        self.client = client or LlmClient(settings)
        if check:
            self.client.check()

    @property
    def threshold(self) -> float:
        return 0.0

    def answer(self, question: str, passages: list[Passage], context: AnswerContext) -> Draft:
        draft = None
        for draft in self.stream(question, passages, context):
            pass
        return draft

    def stream(self, question: str, passages: list[Passage],
               context: AnswerContext) -> Iterator[str | Draft]:
        """The answer text so far (str) as the model writes it, then the checked Draft."""
        english = context.english
        sent = passages[:self.settings.passages]
        if not sent:  # nothing to read: the reader says so in its own words
            yield self.fallback.answer(question, passages, context)
            return
        raw, finish, shown = [], None, ""
        # A follow-up is searched with the question before it (rag/assistant.py): say it too.
        earlier = context.query[:-len(question)].strip() if (
            context.query != question and context.query.endswith(question)) else ""
        try:
            fmt_used = self.client.format

            def messages_for(fmt: str) -> list[dict]:
                nonlocal fmt_used
                fmt_used = fmt
                return prompt.messages(question, sent, fmt, earlier)

            for chunk in self.client.stream(messages_for, prompt.SCHEMA):
                raw.append(chunk.text)
                finish = chunk.finish_reason or finish
                partial = prompt.partial_answer("".join(raw), fmt_used)
                if partial != shown:
                    shown = partial
                    yield partial
            if finish == "length":
                raise LlmFailure("length", f"{self.settings.max_tokens} tokens")
            try:
                reply = prompt.parse("".join(raw), fmt_used)
            except prompt.Unreadable as exc:
                raise LlmFailure("garbage", str(exc)) from None
        except LlmFailure as exc:
            log.info("LLM answer failed (%s: %s); the reader answers instead",
                        exc.kind, exc.detail)
            yield self._fallback(question, passages, context, note(exc.kind, english, exc.detail))
            return
        if not reply.found:
            # A "reason" without words ("100", "") says nothing: the plain one instead.
            reason = reply.reason[:300] if len(re.findall(r"[^\W\d_]", reply.reason)) >= 3 \
                else NO_REASON[english]
            yield Draft(abstention_message(english, reason), [], True, 0.0, 0.0, reason,
                        answerer="llm")
            return
        yield self._checked(question, reply.answer, sent, passages, context)

    def _checked(self, question: str, answer: str, sent: list[Passage],
                 passages: list[Passage], context: AnswerContext) -> Draft:
        """The model's answer cut to its supported claims, or the reader's with a note."""
        found = prompt.claims(answer)
        vectors = None
        if found and context.embed_passages is not None:
            vectors = context.embed_passages([c.text for c in found])
        checked = check_claims(found, sent, context.index, vectors, question, self.settings)
        citations: list[Citation] = []
        by_sentence: dict[str, int] = {}
        numbers: dict[int, int] = {}
        parts = []
        for i, item in enumerate(checked):
            if not item.supported:
                continue
            sentence = item.support.sentence
            if sentence.id not in by_sentence:
                by_sentence[sentence.id] = len(citations) + 1
                citations.append(cite(context.index, sentence, len(citations) + 1,
                                      item.support.score))
            numbers[i] = by_sentence[sentence.id]
            parts.append(f"{item.claim.text.rstrip(' .;:,')} [{numbers[i]}].")
        verified = verified_json(checked, numbers)
        if not citations:
            return self._fallback(question, passages, context,
                                  note("unsupported", context.english), verified)
        share = len(numbers) / len(checked)
        return Draft(" ".join(parts), citations, False, share, 0.0, "", answerer="llm",
                     verified=verified)

    def _fallback(self, question: str, passages: list[Passage], context: AnswerContext,
                  why: str, verified: list[dict] | None = None) -> Draft:
        draft = self.fallback.answer(question, passages, context)
        return Draft(draft.text, draft.citations, draft.abstained, draft.support, draft.threshold,
                     draft.reason, answerer=answerer_name(self.fallback),
                     verified=verified or [], note=why)


def answerer_name(answerer: Answerer) -> str:
    """"reader" or "extractive": what the answer JSON calls the fallback."""
    known = {"ReaderAnswerer": "reader", "ExtractiveAnswerer": "extractive"}
    return getattr(answerer, "name", None) or known.get(type(answerer).__name__, "reader")
