"""The chat under load: many visitors asking at once through the `/ask` API of a real `rag chat`.

Starts `rag chat` on 127.0.0.1 (a free port, the shipped seeds, an index folder of its own in a
temporary folder unless ``--index`` says otherwise) as a subprocess, waits until it answers, asks
every distinct question once alone, then lets ``--users`` visitors (one ``gradio_client.Client``
each) ask ``--questions-per-user`` questions each, all at once. Every request is timed and has a
timeout, and the whole run has a deadline. Prints successes, errors, p50/p95/max latency, the
server's peak memory (VmRSS of the process and its children, polled) and how many answers differ
from the same question asked alone.

The visitors run in this process, on the same cores as the server, and ``gradio_client`` is not
light (per request a thread and two loops polling every 50 ms): the CPU time each side spent is
printed, and the same requests are then sent again through plain HTTP (Gradio's REST route
``/gradio_api/call/ask`` with ``httpx``), which shows what the server itself sustains.

    python benchmarks/load.py [--users 50] [--questions-per-user 4] [--timeout 300]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import set_offline_environment  # noqa: E402

set_offline_environment()

from gradio_client import Client  # noqa: E402

QUESTIONS = ROOT / "eval" / "questions.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_questions(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def signature(answer: dict) -> tuple:
    """What must not depend on the load: the text, the abstention, what is cited and where, and
    which passages were shown (scores are left out: they are reported, not compared)."""
    return (answer["answer"], answer["abstained"],
            tuple((c["source"], c["start_line"], c["end_line"], c["text"])
                  for c in answer["citations"]),
            tuple((p["source"], p["start_line"], p["end_line"]) for p in answer["passages"]))


# --------------------------------------------------------------------------- the server


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, in kB (0 for a process that is gone)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(found.group(1)) if found else 0
    return total


class MemoryPoller:
    """Polls the server's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)


def start_chat(corpus: Path, index: Path, startup_timeout: float) -> Server:
    """`rag chat` as a user starts it, on a free local port; returns once it printed its URL."""
    port = free_port()
    command = [sys.executable, "-m", "rag.cli", "chat", "--corpus", str(corpus), "--index",
               str(index), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    server = Server(process, f"http://127.0.0.1:{port}")
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            server.output.append(line)
            if "Chat ready at" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + startup_timeout
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_chat(server)
            raise SystemExit("rag chat did not start:\n" + "".join(server.output)[-3000:])
    return server


def stop_chat(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# --------------------------------------------------------------------------- the load


@dataclass
class Outcome:
    question: str
    seconds: float
    answer: dict | None = None
    error: str = ""


@dataclass
class Load:
    outcomes: list[Outcome]
    wall: float  # seconds from the first question to the last answer
    server_cpu: float  # CPU seconds the server spent meanwhile
    client_cpu: float  # CPU seconds this process (the visitors' clients) spent meanwhile


#: Asks one question within ``timeout`` seconds; returns the answer JSON or raises.
Ask = Callable[[str, float], dict]


def gradio_visitor(url: str) -> Ask:
    """A visitor with a ``gradio_client.Client`` of its own (the client the README shows)."""
    client = Client(url, verbose=False)
    return lambda question, timeout: client.submit(question, api_name="/ask").result(
        timeout=timeout)


def http_visitor(url: str) -> Ask:
    """A visitor speaking Gradio's REST protocol with plain ``httpx``: start the call, then read
    its event stream to the end."""
    client = httpx.Client(base_url=url)

    def ask(question: str, timeout: float) -> dict:
        started = client.post("/gradio_api/call/ask", json={"data": [question, None]},
                              timeout=timeout)
        started.raise_for_status()
        stream = client.get(f"/gradio_api/call/ask/{started.json()['event_id']}",
                            timeout=timeout)
        event = re.search(r"^event: (\w+)$", stream.text, re.M)
        data = re.search(r"^data: (.*)$", stream.text, re.M)
        if not event or event.group(1) != "complete" or not data:
            raise RuntimeError(f"no answer: {stream.text[:150]!r}")
        return json.loads(data.group(1))[0]

    return ask


def visitor(connect: Callable[[str], Ask], url: str, questions: list[str],
            request_timeout: float, deadline: float, start: threading.Barrier) -> list[Outcome]:
    """One visitor: a client of its own, its questions one after the other."""
    try:
        ask = connect(url)
    except Exception as exc:
        start.wait()  # the others must not wait for this one forever
        return [Outcome(q, 0.0, error=f"cannot connect: {exc}"[:200]) for q in questions]
    start.wait()  # every visitor connected: they all start asking together
    outcomes = []
    for question in questions:
        left = deadline - time.monotonic()
        if left <= 0:
            outcomes.append(Outcome(question, 0.0, error="not asked: global timeout"))
            continue
        started = time.perf_counter()
        try:
            answer = ask(question, min(request_timeout, left))
            outcomes.append(Outcome(question, time.perf_counter() - started, answer))
        except Exception as exc:  # counted and reported, never fatal to the run
            outcomes.append(Outcome(question, time.perf_counter() - started,
                                    error=f"{exc.__class__.__name__}: {exc}"[:200]))
    return outcomes


def run_load(connect: Callable[[str], Ask], url: str, plan: list[list[str]],
             request_timeout: float, total_timeout: float, server_pid: int) -> Load:
    """Every visitor's plan at once: every outcome, the wall time and the CPU time spent."""
    deadline = time.monotonic() + total_timeout
    start = threading.Barrier(len(plan) + 1)
    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        futures = [pool.submit(visitor, connect, url, questions, request_timeout, deadline, start)
                   for questions in plan]
        try:
            start.wait(timeout=total_timeout)
        except threading.BrokenBarrierError:  # visitors still connecting: the deadline stands
            pass
        began, server_cpu, client_cpu = (time.perf_counter(), cpu_seconds(server_pid),
                                         time.process_time())
        done, late = wait(futures, timeout=max(1.0, deadline - time.monotonic()) + 5)
        wall = time.perf_counter() - began
        server_cpu = cpu_seconds(server_pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    outcomes = []
    for future, questions in zip(futures, plan):
        if future in done and future.exception() is None:
            outcomes.extend(future.result())
        else:
            reason = "global timeout" if future in late else str(future.exception())[:200]
            outcomes.extend(Outcome(q, 0.0, error=reason) for q in questions)
    return Load(outcomes, wall, server_cpu, client_cpu)


def report(name: str, load: Load, alone: dict[str, dict], requests: int, users: int) -> None:
    """The figures of one run of the load."""
    ok = [o for o in load.outcomes if o.answer is not None]
    errors = [o for o in load.outcomes if o.answer is None]
    differing = [o for o in ok if signature(o.answer) != signature(alone[o.question])]
    print(f"[{name}] successes {len(ok)}/{requests}, errors {len(errors)}, "
          f"in {load.wall:.1f} s ({len(ok) / load.wall:.1f} answers/s)")
    for kind in sorted({e.error for e in errors})[:5]:
        print(f"  error x{sum(e.error == kind for e in errors)}: {kind}")
    if ok:
        latencies = [o.seconds * 1000 for o in ok]
        server_ms = [o.answer["latency_ms"] for o in ok]
        print(f"[{name}] latency per request (client side, queue included): p50 "
              f"{statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms, "
              f"max {max(latencies):.0f} ms; inside the server (Assistant.ask): p50 "
              f"{statistics.median(server_ms):.1f} ms, p95 {percentile(server_ms, 0.95):.1f} ms")
    print(f"[{name}] CPU: server {load.server_cpu:.1f} s, the {users} clients (this process) "
          f"{load.client_cpu:.1f} s, over {load.wall:.1f} s on {os.cpu_count()} cores")
    print(f"[{name}] answers differing from the same question asked alone: {len(differing)}")
    for o in differing[:3]:
        print(f"  {o.question!r}: {o.answer['answer'][:80]!r} vs "
              f"{alone[o.question]['answer'][:80]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "seeds")
    parser.add_argument("--index", type=Path, default=None,
                        help="index folder (default: a new one in a temporary folder)")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--questions-per-user", type=int, default=4)
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds one request may take")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds each concurrent run may take in all")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()

    questions = load_questions(args.questions)
    plan = [[questions[(user * args.questions_per_user + k) % len(questions)]
             for k in range(args.questions_per_user)] for user in range(args.users)]
    distinct = sorted({q for asked in plan for q in asked}, key=questions.index)
    requests = args.users * args.questions_per_user

    with tempfile.TemporaryDirectory(prefix="rag-load-") as work:
        index = args.index or Path(work) / "index"
        started = time.perf_counter()
        server = start_chat(args.corpus, index, args.startup_timeout)
        try:
            with MemoryPoller(server.process.pid) as memory:
                client = Client(server.url, verbose=False)
                alone = {q: client.predict(q, api_name="/ask") for q in distinct}
                ready_s = time.perf_counter() - started
                idle_kb = rss_kb(server.process.pid)
                load_before = load_average()
                through_client = run_load(gradio_visitor, server.url, plan,
                                          args.request_timeout, args.timeout, server.process.pid)
                load_after = load_average()
                through_http = run_load(http_visitor, server.url, plan, args.request_timeout,
                                        args.timeout, server.process.pid)
        finally:
            stop_chat(server)

    alone_ms = [a["latency_ms"] for a in alone.values()]
    print(f"date {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores "
          f"({platform.processor() or platform.machine()}), Python {platform.python_version()}")
    print(f"rag chat on {args.corpus.name}: ready, and every distinct question asked alone, after "
          f"{ready_s:.1f} s; {len(distinct)} distinct questions, alone: server p50 "
          f"{statistics.median(alone_ms):.1f} ms; idle server memory {idle_kb / 1024:.0f} MB")
    print(f"load: {args.users} users x {args.questions_per_user} questions = {requests} requests, "
          f"all at once; load average before {load_before}, after {load_after}")
    report("gradio_client", through_client, alone, requests, args.users)
    report("plain HTTP", through_http, alone, requests, args.users)
    print(f"server peak memory (VmRSS, with children, both runs): {memory.peak_kb / 1024:.0f} MB")


if __name__ == "__main__":
    main()
