"""Close the Gradio routes that take files or input the chat never uses.

Gradio serves more than the chat needs: ``/gradio_api/upload`` stores anonymous uploads and
answers with their paths on the server, and other routes take streams, recordings, component
calls, proxied URLs, files, logins or live-coding requests. None of them serves this app, which
has no file input, no login and no streaming, and each is input a visitor could send. They are
answered 404 here, before Gradio sees the request (``max_file_size=0`` in ``ui.app`` refuses
uploads again behind this).

What stays open is what the page and ``gradio_client`` use: the page and its assets, ``/config``,
``/gradio_api/info``, the queue (``queue/join``, ``queue/data``, ``heartbeat``, ``cancel``),
``run``/``call`` for the events and the API, and ``/source/``.
"""
from __future__ import annotations

import re

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths (with or without Gradio's ``/gradio_api`` prefix, any trailing slash) that are closed.
CLOSED = re.compile(
    r"^(?:/gradio_api)?/(?:"
    r"upload|upload_progress|component_server|process_recording|stream/.*"
    r"|file=.*|file/.*|proxy=.*|deep_link"
    r"|vibe-[^/]*|undo-vibe-edit|run-history/.*|runs"
    r"|monitoring|monitoring/.*|profiling/.*|dev/reload|mcp|mcp/.*"
    r"|login|logout"
    r")/?$")


class ClosedRoutes:
    """ASGI middleware answering 404 for :data:`CLOSED` paths (pure ASGI, so the queue's
    server-sent events pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and CLOSED.match(scope.get("path", "")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
