"""The OpenAI-compatible HTTP API, as far as answering needs it: ``GET /models`` and a streamed
``POST /chat/completions``.

Plain ``httpx`` rather than the ``openai`` client: two endpoints, one dependency the project
already has, and full control of the three timeouts and of what a half-broken server returns.
Servers differ in what they accept, so the reply format is tried from the strictest down
(``json_schema``, then ``json_object``, then plain text) and the first one the server takes is
kept for the next questions.

The API key comes from ``RAG_LLM_API_KEY`` (or the caller) and goes into one header; it is never
part of a message, a log line or a settings record.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx

from ..config import LlmSettings
from ..errors import RagError

log = logging.getLogger(__name__)

API_KEY_ENV = "RAG_LLM_API_KEY"
#: Reply formats, strictest first (see the module doc).
FORMATS = ("json_schema", "json_object", "text")


class LlmUnavailable(RagError):
    """The server cannot be used at all (unreachable, refuses the key, no such model): reported
    at startup as one line, exit status 2."""


class LlmFailure(Exception):
    """One answer failed (timeout, HTTP error, cut-off or unreadable reply); the answerer falls
    back on the offline reader. ``kind`` names the failure for the note shown to the user:
    "timeout", "down", "http", "length", "garbage"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass
class Chunk:
    """One piece of a streamed reply: new text, and the finish reason on the last one."""

    text: str = ""
    finish_reason: str | None = None


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


class LlmClient:
    """Talks to one server for one model; safe to share between threads (httpx.Client is)."""

    def __init__(self, settings: LlmSettings, api_key: str | None = None,
                 extra_body: Mapping | None = None) -> None:
        """``extra_body`` is merged into every completion request (server-specific options such
        as llama.cpp's ``cache_prompt``)."""
        if not settings.url:
            raise LlmUnavailable("no LLM server given; pass --llm-url (e.g. "
                                 "http://127.0.0.1:11434/v1 for Ollama) or set RAG_LLM_URL")
        if not settings.url.startswith(("http://", "https://")):
            raise LlmUnavailable(f"--llm-url {settings.url!r} is not an http(s) URL; give the "
                                 "server's OpenAI-compatible base, e.g. http://127.0.0.1:8080/v1")
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.model = settings.model
        self.extra_body = dict(extra_body or {})
        key = os.environ.get(API_KEY_ENV, "") if api_key is None else api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(
            connect=settings.connect_timeout, read=settings.first_token_timeout,
            write=settings.connect_timeout + 8, pool=settings.connect_timeout))
        #: The reply format this server accepted last (see FORMATS).
        self.format = FORMATS[0]

    def close(self) -> None:
        self._http.close()

    # --- readiness ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model ids the server serves (``GET /models``); LlmUnavailable when it cannot say."""
        url = f"{self.base}/models"
        try:
            response = self._http.get(url, timeout=httpx.Timeout(
                self.settings.connect_timeout, read=max(5.0, self.settings.connect_timeout)))
        except httpx.ConnectTimeout:
            raise LlmUnavailable(f"the LLM server at {self.base} did not accept a connection "
                                 f"within {self.settings.connect_timeout:g} s; is it running?") from None
        except httpx.TransportError as exc:
            raise LlmUnavailable(f"cannot reach the LLM server at {self.base} "
                                 f"({_one_line(exc) or type(exc).__name__}); start it or fix "
                                 "--llm-url") from None
        if response.status_code in (401, 403):
            raise LlmUnavailable(f"the LLM server at {self.base} refused the request (HTTP "
                                 f"{response.status_code}); set {API_KEY_ENV} to its API key")
        if response.status_code != 200:
            raise LlmUnavailable(f"the LLM server answered HTTP {response.status_code} at {url}; "
                                 "give its OpenAI-compatible base URL (it usually ends in /v1)")
        try:
            data = response.json()["data"]
            return [str(item["id"]) for item in data]
        except (ValueError, KeyError, TypeError):
            raise LlmUnavailable(f"{url} did not return an OpenAI model list; give the server's "
                                 "OpenAI-compatible base URL (it usually ends in /v1)") from None

    def check(self) -> str:
        """Make sure the server answers and serves the model; returns the model used (the only
        one served when none was named)."""
        served = self.models()
        if not self.model:
            if len(served) == 1:
                self.model = served[0]
            elif not served:
                raise LlmUnavailable(f"the LLM server at {self.base} serves no model; load one")
            else:
                raise LlmUnavailable(f"the LLM server at {self.base} serves several models "
                                     f"({', '.join(served[:8])}); choose one with --llm-model")
        elif self.model not in served and not any(
                s.split(":")[0] == self.model.split(":")[0] for s in served):
            raise LlmUnavailable(f"the LLM server at {self.base} does not serve "
                                 f"{self.model!r}; it serves: {', '.join(served[:8]) or 'nothing'}")
        return self.model

    # --- completions -------------------------------------------------------------------------

    def request_body(self, messages: list[dict], fmt: str, schema: dict) -> dict:
        """The completion request for reply format ``fmt`` (one of FORMATS)."""
        body = {"model": self.model, "messages": messages, "stream": True,
                "max_tokens": self.settings.max_tokens, "temperature": self.settings.temperature}
        if fmt == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "cited_answer", "strict": True, "schema": schema}}
        elif fmt == "json_object":
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return body

    def stream(self, messages_for: callable, schema: dict) -> Iterator[Chunk]:
        """Stream one reply: ``messages_for(fmt)`` gives the messages for a reply format (the
        plain-text prompt asks differently). Yields Chunks; the last carries the finish reason.

        A server that rejects a format with HTTP 400/422 (before any token) is asked again with
        the next one. Raises LlmFailure for everything else that goes wrong.
        """
        deadline = time.monotonic() + self.settings.total_timeout
        start = FORMATS.index(self.format)
        for fmt in FORMATS[start:]:
            body = self.request_body(messages_for(fmt), fmt, schema)
            try:
                with self._http.stream("POST", f"{self.base}/chat/completions",
                                       json=body) as response:
                    if response.status_code in (400, 422) and fmt != FORMATS[-1]:
                        detail = _one_line(response.read().decode("utf-8", "replace"))
                        log.info("the LLM server refused response_format %s (%s); trying %s",
                                 fmt, detail, FORMATS[FORMATS.index(fmt) + 1])
                        continue
                    if response.status_code != 200:
                        detail = _one_line(response.read().decode("utf-8", "replace"), 120)
                        raise LlmFailure("http", f"HTTP {response.status_code}"
                                                 + (f": {detail}" if detail else ""))
                    self.format = fmt
                    yield from self._read(response, deadline)
                    return
            except httpx.ConnectTimeout:
                raise LlmFailure("down", f"no connection within "
                                         f"{self.settings.connect_timeout:g} s") from None
            except httpx.ReadTimeout:
                raise LlmFailure("timeout", f"no token for "
                                            f"{self.settings.first_token_timeout:g} s") from None
            except httpx.TransportError as exc:
                raise LlmFailure("down", _one_line(exc) or type(exc).__name__) from None
        raise LlmFailure("http", "the server refused every reply format")  # pragma: no cover

    def _read(self, response: httpx.Response, deadline: float) -> Iterator[Chunk]:
        """The Server-Sent Events of a streamed completion, as Chunks."""
        finished = False
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise LlmFailure("timeout", f"no complete answer within "
                                            f"{self.settings.total_timeout:g} s")
            line = line.strip()
            if not line.startswith("data:"):
                continue  # SSE comments, event names, keep-alives
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                raise LlmFailure("garbage", f"unreadable event {_one_line(data, 60)!r}") from None
            if not isinstance(event, dict):
                raise LlmFailure("garbage", f"unreadable event {_one_line(data, 60)!r}")
            if "error" in event:
                error = event["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise LlmFailure("http", f"server error: {_one_line(message, 120)}")
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or choice.get("message") or {}
                text = delta.get("content") or ""
                reason = choice.get("finish_reason")
                if text or reason:
                    yield Chunk(text if isinstance(text, str) else "", reason)
                if reason:
                    finished = True
        if not finished:
            yield Chunk("", "stop")  # some servers end with [DONE] alone
