"""Bad input and bad luck: every case ends as one line and exit status 2, or as a warning naming
the file while the rest is indexed; the index in use always stays loadable and answering.

Most cases run the command line in this process (``rag_main``) with the fake embedder in place
of the model loader (the ``fake_model`` fixture), so ``rag index`` and ``rag ask`` really embed,
in milliseconds. What needs a process boundary (a ``kill -9`` in the middle of a build, two builds
of one index at once, a warning's exact stderr line) runs ``rag`` as a subprocess: ``Child``
starts the real ``rag.cli.main`` in its own interpreter with the same fake model loader, so the
process, its lock, its signals, its exit status and its stderr are the real ones (bytes that are
not UTF-8 in ``argv`` go through plain ``python -m rag.cli``: they fail before any model).

No test sleeps to synchronise: each waits for something it can observe (a line on a child's
stderr, a build folder appearing, a process ending).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error
from fake_embedder import FAKE_MODEL, FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder, build_fake_index
from rag.answer_types import names_in, names_missing
from rag.assistant import Assistant
from rag.errors import IndexStoreError, QuestionError
from rag.index import load_index
from rag.lock import LOCK_NAME

TESTS = Path(__file__).resolve().parent
SUMMIT_QUESTION = "Où se tiendra le prochain sommet de l'alliance atlantique ?"


# --------------------------------------------------------------------------- helpers


@pytest.fixture()
def fake_model(monkeypatch):
    """The command line's model loader returns the fake embedder (``--model fake-hash``)."""
    import rag.assistant
    import rag.embedder
    monkeypatch.setattr(rag.embedder, "load_embedder", lambda *args, **kwargs: FakeEmbedder())
    monkeypatch.setattr(rag.assistant, "load_embedder", lambda *args, **kwargs: FakeEmbedder())


@pytest.fixture()
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: the case must end before embedding."""
    import rag.assistant
    import rag.embedder

    def forbidden(*args, **kwargs):
        raise AssertionError("no model may be loaded here")

    monkeypatch.setattr(rag.embedder, "load_embedder", forbidden)
    monkeypatch.setattr(rag.assistant, "load_embedder", forbidden)


def args(corpus: Path, index: Path) -> list[object]:
    return ["--corpus", corpus, "--index", index, "--model", FAKE_MODEL]


def current_build(index: Path) -> str:
    return (index / "CURRENT").read_text(encoding="utf-8").strip()


def build_folders(index: Path) -> list[str]:
    return sorted(p.name for p in index.iterdir() if p.name.startswith("build-"))


def indexed_files(index: Path) -> set[str]:
    return set(load_index(index).manifest["files"])


def assert_answers(corpus: Path, index: Path, question: str = SUMMIT_QUESTION,
                   source: str = "sommet.txt") -> None:
    """The index loads and answers ``question`` from ``source``."""
    assistant = Assistant(corpus, index, FAKE_SETTINGS, FAKE_SEARCH, update=False,
                          embedder=FakeEmbedder())
    answer = assistant.ask(question)
    assert not answer.abstained, answer.reason
    assert [c.source for c in answer.citations][:1] == [source]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


#: The real command line in its own interpreter, with the fake embedder as model loader.
FAKE_RAG = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from fake_embedder import FakeEmbedder
import rag.embedder
rag.embedder.load_embedder = lambda *args, **kwargs: FakeEmbedder()
from rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Child:
    """A ``rag`` subprocess whose stderr lines can be waited for as they come."""

    #: Every child started, so that none outlives its test (see ``no_stray_children``).
    started: list[Child] = []

    def __init__(self, *argv: object, env: dict | None = None) -> None:
        Child.started.append(self)
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_RAG, *map(str, argv)], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_stderr(self, needle: str, timeout: float = 60) -> str:
        """The first stderr line holding ``needle``; fails if the child ends or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {needle!r} on stderr within {timeout} s: {self.stderr_lines}")
            if line is None:
                pytest.fail(f"the child ended without printing {needle!r}: {self.stderr_lines}")
            if needle in line:
                return line

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        stdout = self.process.stdout.read()
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, code, stdout,
                                           "".join(f"{line}\n" for line in self.stderr_lines))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture(autouse=True)
def no_stray_children():
    """A failing test must not leave a ``rag`` process running (and writing) behind it."""
    yield
    while Child.started:
        Child.started.pop().kill()


class HeldLock:
    """The index's LOCK, taken by the test itself: every build of that index must wait."""

    def __init__(self, index: Path) -> None:
        self.fd = os.open(index / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture()
def held_lock():
    locks: list[HeldLock] = []
    yield lambda index: locks.append(HeldLock(index)) or locks[-1]
    for lock in locks:
        lock.release()


def add_file(corpus: Path, name: str = "nouveau.txt") -> None:
    (corpus / name).write_text("Le comté est un fromage affiné pendant au moins quatre mois dans "
                               "le massif du Jura.\n", encoding="utf-8")


COMTE_QUESTION = "Quel fromage est affiné dans le massif du Jura ?"


# --------------------------------------------------------------------------- 1. bad files


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_warning(tiny_corpus, tmp_path, rag_main,
                                                                 fake_model, caplog):
    with open(os.path.join(os.fsencode(tiny_corpus), b"bad\xffname.txt"), "wb") as f:
        f.write("Le comté est affiné pendant au moins quatre mois dans le Jura.\n".encode())
    index = tmp_path / "index"
    with caplog.at_level(logging.WARNING):
        result = rag_main("index", *args(tiny_corpus, index))
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(caplog)
    assert "b'bad\\xffname.txt'" in warning and "not valid UTF-8" in warning and "rename" in warning
    assert indexed_files(index) == {"sommet.txt", "tour.txt", "fromages/camembert.md"}
    assert_answers(tiny_corpus, index)


def _dangling_link(corpus: Path) -> Path:
    link = corpus / "lien.txt"
    link.symlink_to("disparu.txt")  # inside the corpus, to a file that does not exist
    return link


def _no_permission(corpus: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    path = corpus / "secret.txt"
    path.write_text("Une phrase assez longue pour être indexée si on pouvait la lire.\n")
    path.chmod(0)
    return path


@pytest.mark.parametrize("make_unreadable", [_dangling_link, _no_permission],
                         ids=["dangling-link", "chmod-000"])
def test_an_unreadable_file_is_skipped_with_a_warning(make_unreadable, tiny_corpus, tmp_path,
                                                      rag_main, fake_model, caplog):
    bad = make_unreadable(tiny_corpus)
    index = tmp_path / "index"
    try:
        with caplog.at_level(logging.WARNING):
            result = rag_main("index", *args(tiny_corpus, index))
    finally:
        if not bad.is_symlink():
            bad.chmod(0o644)
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(caplog)
    assert bad.name in warning and "cannot read" in warning and "check" in warning
    assert indexed_files(index) == {"sommet.txt", "tour.txt", "fromages/camembert.md"}
    assert_answers(tiny_corpus, index)


def test_binary_data_is_skipped_and_windows_1252_french_is_read(tiny_corpus, tmp_path, rag_main,
                                                                fake_model, caplog):
    """Binary files without a NUL byte (random bytes: they are no UTF-8 and "decode" as
    Windows-1252 gibberish; random ASCII: valid UTF-8 full of control characters) are skipped
    with a warning; French text saved as Windows-1252 is read, with its own warning."""
    rng = random.Random(7)
    (tiny_corpus / "image.txt").write_bytes(bytes(rng.randrange(1, 256) for _ in range(20_000)))
    (tiny_corpus / "dump.md").write_bytes(bytes(rng.randrange(1, 128) for _ in range(20_000)))
    (tiny_corpus / "comte.txt").write_bytes(
        "Le comté est un fromage affiné pendant au moins quatre mois dans le massif du Jura, "
        "à l'abri de la lumière.\n".encode("cp1252"))
    index = tmp_path / "index"
    with caplog.at_level(logging.WARNING):
        result = rag_main("index", *args(tiny_corpus, index))
    assert result.returncode == 0, result.stderr
    warnings = warnings_of(caplog)
    assert any("image.txt" in w and "binary" in w for w in warnings), warnings
    assert any("dump.md" in w and "binary" in w for w in warnings), warnings
    assert any("comte.txt" in w and "not valid UTF-8" in w for w in warnings), warnings
    loaded = load_index(index)
    assert set(loaded.manifest["files"]) == {"sommet.txt", "tour.txt", "fromages/camembert.md",
                                             "comte.txt"}
    assert not {c.source for c in loaded.chunks} & {"image.txt", "dump.md"}
    assert "affiné" in loaded.source_text("comte.txt")
    assert_answers(tiny_corpus, index, COMTE_QUESTION, "comte.txt")


# --------------------------------------------------------------------------- 4. questions


@pytest.mark.parametrize("question", [
    "Quel \udcff ?",                     # a byte that is not UTF-8, as the shell passes it on
    "Quel \udced\udca0\udc80 ?",         # an encoded lone surrogate (ED A0 80) from the shell
    "Quel \ud800 sommet ?",              # a lone surrogate through the Python API
])
def test_a_question_that_is_not_valid_utf8_is_a_one_line_error(question, tiny_corpus, tiny_index,
                                                               rag_main, no_model):
    result = rag_main("ask", question, *args(tiny_corpus, tiny_index))
    assert_one_line_error(result, "not valid UTF-8")
    assert result.stdout == ""


def test_bytes_that_are_not_utf8_on_the_real_command_line_are_a_one_line_error(tiny_corpus,
                                                                               tiny_index):
    """``rag ask $'Quel \\xff ?'``: real bytes in argv, through a real process."""
    result = subprocess.run([sys.executable, "-m", "rag.cli", "ask", b"Quel \xff ?",
                             *map(str, args(tiny_corpus, tiny_index))], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "not valid UTF-8")


@pytest.mark.parametrize("question", ["\u200b\u200c\u200d", "\ufeff \u2060", "\x00\x07\x1b\x7f",
                                      "\t\u200b\n\u00ad", "\u3164"])
def test_a_question_of_invisible_characters_is_blank(question, tiny_corpus, tiny_index, rag_main,
                                                     no_model):
    assert_one_line_error(rag_main("ask", question, *args(tiny_corpus, tiny_index)), "empty")


def test_invisible_characters_inside_a_question_are_dropped(fake_assistant):
    assert fake_assistant.clean_question("Où\u200b se\x00 tiendra\u2060 le sommet ?") == \
        "Où se tiendra le sommet ?"


@pytest.mark.parametrize("question", [42, None, b"Quel sommet ?", ["Quel sommet ?"]])
def test_a_question_that_is_not_text_is_refused_as_such(question, fake_assistant):
    with pytest.raises(QuestionError, match="the question must be text"):
        fake_assistant.ask(question)


# --------------------------------------------------------------------------- 4. index paths


@pytest.mark.parametrize("command", ["index", "ask"])
def test_an_index_path_that_is_a_file_fails_before_any_embedding(command, tiny_corpus, tmp_path,
                                                                 rag_main, no_model):
    not_a_folder = tmp_path / "index.txt"
    not_a_folder.write_text("not an index\n")
    question = [SUMMIT_QUESTION] if command == "ask" else []
    result = rag_main(command, *question, *args(tiny_corpus, not_a_folder))
    assert_one_line_error(result, "is a file", str(not_a_folder))
    assert not_a_folder.read_text() == "not an index\n"


def test_a_corpus_path_that_is_a_file_is_a_one_line_error(tmp_path, rag_main, no_model):
    (tmp_path / "notes.txt").write_text("Une phrase assez longue pour un document.\n")
    assert_one_line_error(rag_main("index", *args(tmp_path / "notes.txt", tmp_path / "index")),
                          "is a file")


def test_a_path_that_is_not_utf8_is_a_one_line_error(tmp_path, rag_main, no_model):
    corpus = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"corpus\xff")))
    corpus.mkdir()
    assert_one_line_error(rag_main("index", "--corpus", corpus, "--model", FAKE_MODEL),
                          "--corpus", "not valid UTF-8", "\\xff")


# --------------------------------------------------------------------------- 4. damaged indexes


def _manifest_path(index: Path) -> Path:
    return index / current_build(index) / "manifest.json"


def _manifest_list(index: Path) -> None:
    _manifest_path(index).write_text("[1, 2, 3]\n")


def _manifest_without(key: str):
    def damage(index: Path) -> None:
        path = _manifest_path(index)
        manifest = json.loads(path.read_text(encoding="utf-8"))
        del manifest[key]
        path.write_text(json.dumps(manifest), encoding="utf-8")
    damage.__name__ = f"manifest_without_{key}"
    return damage


def _current_random_bytes(index: Path) -> None:
    (index / "CURRENT").write_bytes(bytes(random.Random(3).randrange(256) for _ in range(64)))


def _current_folder(index: Path) -> None:
    (index / "CURRENT").unlink()
    (index / "CURRENT").mkdir()
    (index / "CURRENT" / "junk").write_text("x")


def _data_file_truncated(index: Path) -> None:
    path = index / current_build(index) / "sentences.faiss"
    path.write_bytes(path.read_bytes()[:100])


def _sentences_out_of_order(index: Path) -> None:
    path = index / current_build(index) / "sentences.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([lines[-1], *lines[1:-1], lines[0]]), encoding="utf-8")


def _chunk_record_missing(index: Path) -> None:
    path = index / current_build(index) / "chunks.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")


DAMAGES = [_manifest_list, _manifest_without("files"), _manifest_without("counts"),
           _manifest_without("model"), _current_random_bytes, _current_folder,
           _data_file_truncated, _chunk_record_missing]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__.strip("_"))
def test_a_damaged_index_is_one_line_for_readers(damage, tiny_index):
    damage(tiny_index)
    with pytest.raises(IndexStoreError) as error:
        load_index(tiny_index)
    message = str(error.value)
    assert "damaged" in message and "rag index --rebuild" in message and "\n" not in message


def test_records_out_of_order_are_damage_for_readers(tiny_index):
    """Sentences must follow their chunks' order (lookups rely on it); a file that breaks it, even
    one the same size as before, is reported rather than answered from."""
    _sentences_out_of_order(tiny_index)
    with pytest.raises(IndexStoreError, match="damaged"):
        load_index(tiny_index)


@pytest.mark.parametrize("command", [["index"], ["index", "--rebuild"], ["ask", SUMMIT_QUESTION]],
                         ids=["index", "rebuild", "ask"])
@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__.strip("_"))
def test_a_damaged_index_is_rebuilt_by_index_rebuild_and_ask(damage, command, tiny_corpus,
                                                             tiny_index, rag_main, fake_model,
                                                             caplog):
    """Plain ``rag index`` and ``rag ask`` (which updates the index first) rebuild a damaged
    index from scratch with one warning; ``--rebuild`` does so without reading it."""
    damage(tiny_index)
    with caplog.at_level(logging.WARNING):
        result = rag_main(*command, *args(tiny_corpus, tiny_index))
    assert result.returncode == 0, result.stderr
    warnings = warnings_of(caplog)
    if "--rebuild" in command:
        assert warnings == []
        assert "full rebuild: requested with --rebuild" in result.stderr
    else:
        assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0]
        assert "full rebuild" not in result.stderr  # said once, by the warning
    assert build_folders(tiny_index) == [current_build(tiny_index)]
    assert indexed_files(tiny_index) == {"sommet.txt", "tour.txt", "fromages/camembert.md"}
    assert_answers(tiny_corpus, tiny_index)


def test_the_repair_warning_is_one_line_on_the_real_command_line(tiny_corpus, tiny_index):
    _current_random_bytes(tiny_index)
    result = Child("index", *args(tiny_corpus, tiny_index)).finish()
    assert result.returncode == 0, result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith("WARNING: index at") and "damaged" in warning
    assert "3 files" in result.stdout
    assert_answers(tiny_corpus, tiny_index)


def test_another_format_version_is_left_alone(tiny_corpus, tiny_index, rag_main, no_model):
    """Not damage: a newer program may read it. The user decides, with --rebuild."""
    path = _manifest_path(tiny_index)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["format_version"] += 1
    path.write_text(json.dumps(manifest), encoding="utf-8")
    assert_one_line_error(rag_main("index", *args(tiny_corpus, tiny_index)),
                          "format version", "--rebuild")
    assert json.loads(path.read_text(encoding="utf-8")) == manifest


# --------------------------------------------------------------------------- 5. one writer


def test_a_build_killed_while_writing_leaves_the_previous_index_in_use(tiny_corpus, tiny_index,
                                                                      rag_main, fake_model,
                                                                      caplog):
    """``kill -9`` a ``rag index`` process the moment its new build folder appears: the previous
    build stays current, loads and answers; the kill released the lock, and the next build
    removes the half-written folder.

    The previous index holds 240 generated files (about 2,900 chunks), so writing a build takes
    a tenth of a second or more while the test polls every millisecond; should a loaded machine
    still let the write finish first (CURRENT switched: nothing was proven), the test tries
    again with one more file, up to 3 times.
    """
    from test_index import write_big_corpus
    write_big_corpus(tiny_corpus / "big", files=240, seed=0)
    build_fake_index(tiny_corpus, tiny_index)
    for attempt in range(3):
        before, existing = current_build(tiny_index), set(build_folders(tiny_index))
        add_file(tiny_corpus, f"nouveau-{attempt}.txt")
        child = Child("index", *args(tiny_corpus, tiny_index))
        try:
            partial = _wait_for_new_build(tiny_index, existing, child)
        finally:
            child.kill()
        if child.process.returncode == -signal.SIGKILL and current_build(tiny_index) == before:
            break
    else:
        pytest.fail("every build finished writing before the kill landed")
    assert partial.is_dir()  # the half-written build is left as it was, and unused
    loaded = load_index(tiny_index)
    assert loaded.manifest["counts"]["files"] == 243 + attempt  # earlier attempts completed
    assert f"nouveau-{attempt}.txt" not in loaded.manifest["files"]
    assert_answers(tiny_corpus, tiny_index)

    with caplog.at_level(logging.WARNING):
        result = rag_main("index", *args(tiny_corpus, tiny_index), "--json")
    assert result.returncode == 0, result.stderr
    assert not any("waiting" in w for w in warnings_of(caplog))  # the killed build's lock is gone
    assert json.loads(result.stdout)["embedded"] == 1
    assert build_folders(tiny_index) == [current_build(tiny_index)] != [before]
    assert not [p for p in tiny_index.iterdir() if p.name.startswith("CURRENT.")]
    assert_answers(tiny_corpus, tiny_index, COMTE_QUESTION, "nouveau-0.txt")


def _wait_for_new_build(index: Path, existing: set[str], child: Child,
                        timeout: float = 60) -> Path:
    """The build folder ``child`` creates, as soon as it exists."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = [p for p in index.iterdir()
                 if p.name.startswith("build-") and p.name not in existing]
        if fresh:
            return fresh[0]
        if child.process.poll() is not None:
            pytest.fail(f"the build ended ({child.process.returncode}) before any new build "
                        f"folder appeared: {child.stderr_lines}")
        if time.monotonic() > deadline:
            pytest.fail(f"no new build folder within {timeout} s")
        time.sleep(0.001)


def test_two_builds_started_together_embed_once(tiny_corpus, tiny_index, held_lock):
    """Two ``rag index`` processes on one index: the test holds the LOCK until both say they
    wait, then lets go. One builds and embeds the new file; the other, once it has the lock,
    reads the index again, finds it up to date and embeds nothing."""
    add_file(tiny_corpus)
    lock = held_lock(tiny_index)
    before = current_build(tiny_index)
    children = [Child("index", *args(tiny_corpus, tiny_index), "--json") for _ in range(2)]
    for child in children:
        line = child.wait_for_stderr("waiting for another build")
        assert line.startswith("WARNING: waiting for another build of the index at")
    assert current_build(tiny_index) == before  # nobody built while the lock was held
    lock.release()
    results = [child.finish() for child in children]
    for result in results:
        assert result.returncode == 0, result.stderr
        assert len(result.stderr.splitlines()) == 1  # the waiting line only
    reports = sorted((json.loads(r.stdout) for r in results), key=lambda r: r["embedded"])
    assert [r["embedded"] for r in reports] == [0, 1]
    assert reports[0]["chunks"] == reports[1]["chunks"] == reports[0]["reused"]
    assert build_folders(tiny_index) == [current_build(tiny_index)] != [before]
    assert load_index(tiny_index).manifest["counts"]["files"] == 4
    assert_answers(tiny_corpus, tiny_index, COMTE_QUESTION, "nouveau.txt")


def test_a_build_that_waits_too_long_exits_2_with_one_line(tiny_corpus, tiny_index, held_lock):
    add_file(tiny_corpus)
    held_lock(tiny_index)
    before = current_build(tiny_index)
    result = Child("index", *args(tiny_corpus, tiny_index),
                   env={"RAG_LOCK_TIMEOUT": "0.5"}).finish()
    waiting, error = result.stderr.splitlines()  # exactly two lines: the wait, then the error
    assert waiting.startswith("WARNING: waiting for another build") and "0.5 s" in waiting
    assert_one_line_error(subprocess.CompletedProcess([], result.returncode, "", error + "\n"),
                          "another build", "still running", "RAG_LOCK_TIMEOUT")
    assert current_build(tiny_index) == before and build_folders(tiny_index) == [before]


def test_readers_and_unchanged_checks_never_wait(tiny_corpus, tiny_index, held_lock, rag_main,
                                                 fake_model, monkeypatch):
    held_lock(tiny_index)
    monkeypatch.setenv("RAG_LOCK_TIMEOUT", "0")
    assert load_index(tiny_index) is not None
    result = rag_main("ask", SUMMIT_QUESTION, *args(tiny_corpus, tiny_index))
    assert result.returncode == 0, result.stderr
    assert rag_main("index", *args(tiny_corpus, tiny_index)).returncode == 0
    add_file(tiny_corpus)  # now there is something to build: the lock is needed
    assert_one_line_error(rag_main("index", *args(tiny_corpus, tiny_index)), "another build")


def test_leftovers_are_removed_only_under_the_lock(tiny_corpus, tiny_index, held_lock, rag_main,
                                                   fake_model, monkeypatch):
    """Debris of killed builds is removed at the start of the next build (even one that then
    fails), or by an unchanged check that finds the lock free; never while another build runs."""
    current = current_build(tiny_index)
    debris = [tiny_index / "build-20000101-000000-deadbeef", tiny_index / "CURRENT.tmp-99999"]
    debris[0].mkdir()
    (debris[0] / "chunks.jsonl").write_text("{}\n")
    debris[1].write_text("build-20000101-000000-deadbeef\n")

    lock = held_lock(tiny_index)
    assert rag_main("index", *args(tiny_corpus, tiny_index)).returncode == 0  # unchanged
    assert all(p.exists() for p in debris)  # another build holds the lock: left alone
    lock.release()

    import rag.embedder

    def no_model(*args, **kwargs):
        raise IndexStoreError("no model")

    monkeypatch.setattr(rag.embedder, "load_embedder", no_model)
    add_file(tiny_corpus)
    assert_one_line_error(rag_main("index", *args(tiny_corpus, tiny_index)), "no model")
    assert not any(p.exists() for p in debris)  # removed when the build started
    assert build_folders(tiny_index) == [current] == [current_build(tiny_index)]
    assert_answers(tiny_corpus, tiny_index)


def test_a_bad_lock_timeout_setting_is_a_one_line_error(tiny_corpus, tiny_index, rag_main,
                                                        no_model, monkeypatch):
    monkeypatch.setenv("RAG_LOCK_TIMEOUT", "soon")
    add_file(tiny_corpus)
    assert_one_line_error(rag_main("index", *args(tiny_corpus, tiny_index)), "RAG_LOCK_TIMEOUT")


# --------------------------------------------------------------------------- 7. the names check


@pytest.mark.parametrize("question", [
    "<script>alert(1)</script> Quel est le rôle de l'OTAN ?",
    "<b>Question</b> : Quel est le rôle de l'OTAN ?",
    "<!-- note --> Quel est le rôle de l'OTAN ?",
    "Bonjour. Quel est le rôle de l'OTAN ?",
])
def test_markup_and_question_words_are_not_names(question):
    names = [n for n in names_in(question) if n != ("Question",)]
    assert names == [("OTAN",)]
    assert names_missing(question, "Le rôle de l'OTAN est de défendre ses membres.") == []
    assert names_missing(question, "Le rôle de l'alliance.") == ["OTAN"]


def test_names_are_still_found_around_markup():
    text = "<p>Comment <em>Mark Rutte</em> a-t-il parlé à La Haye ?</p>"
    assert names_in(text) == [("Mark", "Rutte"), ("La", "Haye")]
    # Comparison signs are not markup: only tag-shaped text is removed.
    assert names_in("Si a < b et Marc > Anne, Quand Emmanuel Macron part-il ?") == [
        ("Marc",), ("Anne",), ("Emmanuel", "Macron")]
