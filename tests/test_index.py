"""The index folder: incremental updates, full rebuilds, atomic writes and clear errors.

What is tested here is the index's bookkeeping, which does not depend on the model, so the index
is built with the fake embedder (tests/fake_embedder.py) over the tiny corpus, in milliseconds.
The last test (``slow``) checks what only the real model can show: its record in the manifest,
and that the vectors it reuses equal the ones it computes afresh.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import SEEDS, assert_one_line_error, write_tiny_corpus
from fake_embedder import FAKE_MODEL, FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder, build_fake_index
from rag.assistant import Assistant
from rag.config import IndexSettings, SearchSettings
from rag.errors import IndexStoreError
from rag.index import load_index, update_index

QUESTIONS = ["Où se tiendra le prochain sommet de l'alliance atlantique ?",
             "Combien de kilomètres parcourront les coureurs du Tour de France ?",
             "Qui aurait inventé la recette du camembert ?"]


def current_build(index: Path) -> str:
    return (index / "CURRENT").read_text(encoding="utf-8").strip()


def manifest_of(index: Path) -> dict:
    return json.loads((index / current_build(index) / "manifest.json").read_text(encoding="utf-8"))


def build_folders(index: Path) -> list[str]:
    return sorted(p.name for p in index.iterdir() if p.name.startswith("build-"))


def dense_results(index: Path, corpus: Path) -> list[list[tuple[str, float]]]:
    """Chunk ids and scores of the dense retriever for :data:`QUESTIONS`: what the stored
    vectors are, seen through the public API."""
    assistant = Assistant(corpus, index, FAKE_SETTINGS, FAKE_SEARCH, update=False,
                          embedder=FakeEmbedder())
    return [[(p.chunk_id, p.score) for p in assistant.ask(q, retriever="dense").passages]
            for q in QUESTIONS]


@pytest.fixture()
def index(tiny_index) -> Path:
    """The tiny corpus's fake index, a copy this test may change."""
    return tiny_index


# --------------------------------------------------------------------------- incremental updates


def test_incremental_add_change_delete(tiny_corpus, tmp_path):
    index = tmp_path / "fresh"
    first = build_fake_index(tiny_corpus, index)
    assert first.files == 3 and first.embedded == first.chunks > 3 and first.reused == 0
    again = build_fake_index(tiny_corpus, index)
    assert (again.embedded, again.reused, again.removed) == (0, first.chunks, 0)

    (tiny_corpus / "fromages" / "comte.txt").write_text(
        "Le comté est affiné pendant au moins quatre mois dans le massif du Jura.\n",
        encoding="utf-8")
    added = build_fake_index(tiny_corpus, index)
    assert (added.files, added.embedded, added.reused) == (4, 1, first.chunks)

    changed_file = tiny_corpus / "tour.txt"
    changed_file.write_text(changed_file.read_text(encoding="utf-8")
                            + "\nLe maillot jaune récompense le coureur le plus rapide.\n",
                            encoding="utf-8")
    changed = build_fake_index(tiny_corpus, index)
    tour_chunks = len(manifest_of(index)["files"]["tour.txt"]["chunks"])
    assert changed.embedded == tour_chunks and changed.reused == changed.chunks - tour_chunks
    assert not changed.full_rebuild

    (tiny_corpus / "fromages" / "comte.txt").unlink()
    removed = build_fake_index(tiny_corpus, index)
    assert (removed.files, removed.removed, removed.embedded) == (3, 1, 0)

    loaded = load_index(index)
    assert sorted(loaded.manifest["files"]) == ["fromages/camembert.md", "sommet.txt", "tour.txt"]
    assert len(loaded.chunks) == removed.chunks == loaded.manifest["counts"]["chunks"]
    assert {c.source for c in loaded.chunks} == set(loaded.manifest["files"])
    assert build_folders(index) == [current_build(index)]  # older builds are cleaned up


def test_sentences_are_found_by_id_and_by_chunk(index):
    loaded = load_index(index)
    by_chunk: dict[str, list] = {}
    for sentence in loaded.sentences:
        assert loaded.sentence(sentence.id) is sentence
        by_chunk.setdefault(sentence.chunk_id, []).append(sentence)
    last, first = loaded.chunks[-1].id, loaded.chunks[0].id
    assert loaded.sentences_of([last, first]) == by_chunk[last] + by_chunk[first]
    assert loaded.sentences_of(["no such chunk"]) == []
    for bad in ("", ":", f"{first}:999", f"{first}:x", "no such chunk:0", f"{first}:-1"):
        with pytest.raises(KeyError):
            loaded.sentence(bad)


def test_reused_vectors_equal_fresh_ones(tiny_corpus, index, tmp_path):
    """An updated index must search exactly like one built from scratch on the same files."""
    (tiny_corpus / "extra.txt").write_text("Un fichier de plus sur le sommet de juin, pour forcer "
                                           "une mise à jour partielle.\n", encoding="utf-8")
    assert build_fake_index(tiny_corpus, index).reused > 0
    build_fake_index(tiny_corpus, tmp_path / "scratch")
    updated, scratch = load_index(index), load_index(tmp_path / "scratch")
    assert [c.id for c in updated.chunks] == [c.id for c in scratch.chunks]
    assert dense_results(index, tiny_corpus) == dense_results(tmp_path / "scratch", tiny_corpus)


def test_an_updated_file_is_found_by_its_new_text(tiny_corpus, index):
    question = "Quel fromage est affiné dans le massif du Jura ?"
    before = Assistant(tiny_corpus, index, FAKE_SETTINGS, FAKE_SEARCH, embedder=FakeEmbedder())
    assert before.ask(question).abstained
    (tiny_corpus / "comte.txt").write_text(
        "Le comté est un fromage affiné pendant au moins quatre mois dans le massif du Jura.\n",
        encoding="utf-8")
    after = Assistant(tiny_corpus, index, FAKE_SETTINGS, FAKE_SEARCH, embedder=FakeEmbedder())
    answer = after.ask(question)
    assert not answer.abstained and [c.source for c in answer.citations] == ["comte.txt"]


def test_settings_change_triggers_full_rebuild(tiny_corpus, index):
    report = build_fake_index(tiny_corpus, index, replace(FAKE_SETTINGS, chunk_size=400))
    assert report.full_rebuild and "chunk_size" in report.reason
    assert report.reused == 0 and report.embedded == report.chunks
    model = update_index(tiny_corpus, index, IndexSettings(model="fake-other"),
                         lambda: FakeEmbedder(name="fake-other"))
    assert model.full_rebuild and "model changed" in model.reason and model.reused == 0


def test_other_weights_under_the_same_name_trigger_a_full_rebuild(tiny_corpus, index):
    (tiny_corpus / "new.txt").write_text("Une phrase nouvelle sur les chefs d'État réunis.\n",
                                         encoding="utf-8")
    other = FakeEmbedder(dim=128)  # same name, other vectors: its weights hash differs
    report = update_index(tiny_corpus, index, FAKE_SETTINGS, lambda: other)
    assert report.full_rebuild and "weights" in report.reason
    assert report.embedded == report.chunks
    assert manifest_of(index)["model"]["weights_hash"] == other.weights_hash


def test_manifest_records_model_settings_and_files(index):
    manifest = load_index(index).manifest
    assert isinstance(manifest["format_version"], int)
    assert manifest["model"]["name"] == FAKE_MODEL
    assert manifest["model"]["weights_hash"] == FakeEmbedder().weights_hash
    assert manifest["settings"] == FAKE_SETTINGS.to_json()
    assert set(manifest["files"]) == {"sommet.txt", "fromages/camembert.md", "tour.txt"}
    for entry in manifest["files"].values():
        assert len(entry["hash"]) == 64 and entry["chunks"]
    folder = index / current_build(index)
    for path in folder.rglob("*"):  # nothing the program loads is a pickle
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        assert path.suffix not in (".pkl", ".pickle")


def test_unchanged_run_is_fast_and_loads_no_model(tiny_corpus, index):
    started = time.perf_counter()
    report = update_index(tiny_corpus, index, FAKE_SETTINGS,
                          lambda: pytest.fail("the model must not be loaded"))
    assert report.embedded == 0 and time.perf_counter() - started < 1


def test_nothing_is_written_into_the_corpus(tiny_corpus, tmp_path):
    before = sorted(p.relative_to(tiny_corpus) for p in tiny_corpus.rglob("*"))
    build_fake_index(tiny_corpus, tmp_path / "index")
    assert sorted(p.relative_to(tiny_corpus) for p in tiny_corpus.rglob("*")) == before


# --------------------------------------------------------------------------- atomic builds

KILL_ATTEMPTS = 3
#: Files added per attempt: 1,440 chunks and 5,760 sentences, a build folder written in about
#: 0.1 s. The kill lands within milliseconds of the folder appearing; each retry adds as many again.
BIG_FILES = 120
BUILD_APPEAR_TIMEOUT = 60.0


def write_big_corpus(folder: Path, files: int, seed: int) -> None:
    """``files`` generated French-looking files of 12 paragraphs: enough chunks and sentences
    that writing the build folder takes long enough for a SIGKILL to land in the middle."""
    rng = random.Random(seed)
    vocab = [stem + end for stem in ("défens", "budget", "allianc", "sommet", "minist", "armé",
                                     "traité", "accord", "frontièr", "conseil", "missil", "soldat",
                                     "président", "élect", "réform", "march")
             for end in ("e", "es", "er", "ait", "ions", "ant")]
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        paragraphs = [" ".join(" ".join(rng.choice(vocab) for _ in range(14)).capitalize() + "."
                               for _ in range(4)) for _ in range(12)]
        (folder / f"big-{seed}-{f:03d}.txt").write_text("\n\n".join(paragraphs) + "\n",
                                                        encoding="utf-8")


def wait_for_new_build(index: Path, current: str, child: multiprocessing.Process) -> Path:
    """The build folder the child is writing, as soon as it exists."""
    deadline = time.monotonic() + BUILD_APPEAR_TIMEOUT
    while True:
        fresh = [p for p in index.iterdir() if p.name.startswith("build-") and p.name != current]
        if fresh:
            return fresh[0]
        if not child.is_alive():
            pytest.fail(f"the build process ended (exit code {child.exitcode}) before any new "
                        f"build folder appeared in {index}")
        if time.monotonic() > deadline:
            pytest.fail(f"no new build folder appeared in {index} within "
                        f"{BUILD_APPEAR_TIMEOUT:.0f} s of starting the build")
        time.sleep(0.001)


def test_a_killed_build_leaves_the_previous_index_loadable(tiny_corpus, index):
    """SIGKILL a build while it writes its folder: the previous build stays current and loads,
    and the next run completes and removes the debris.

    The build runs in a ``spawn`` child process (a fresh interpreter, as ``rag index`` would be)
    that uses the fake embedder; the test polls for the new ``build-*`` folder and kills the child
    the moment it appears. A loaded machine might let the write finish first: then the kill came
    too late to prove anything and the test tries again with more files, up to 3 times.
    """
    before = load_index(index)
    searched_before = dense_results(index, tiny_corpus)
    context = multiprocessing.get_context("spawn")
    for attempt in range(KILL_ATTEMPTS):
        current = current_build(index)
        write_big_corpus(tiny_corpus / "big", files=BIG_FILES, seed=attempt)
        child = context.Process(target=build_fake_index, args=(str(tiny_corpus), str(index)),
                                daemon=True)
        child.start()
        try:
            partial = wait_for_new_build(index, current, child)
            child.kill()
        finally:
            if child.is_alive():
                child.kill()
            child.join(timeout=30)
        if child.exitcode == -signal.SIGKILL and current_build(index) == current:
            break  # killed before the switch to the new build: its write was cut short
    else:
        pytest.fail(f"in {KILL_ATTEMPTS} tries every build finished writing before the kill "
                    f"(last exit code {child.exitcode})")

    assert partial.is_dir()  # the half-written build is left as it was, and unused
    after = load_index(index)  # must not raise
    assert [c.id for c in after.chunks] == [c.id for c in before.chunks]
    assert len(after.chunks) == after.manifest["counts"]["chunks"]
    assert dense_results(index, tiny_corpus) == searched_before

    final = build_fake_index(tiny_corpus, index)  # a later run completes and cleans up
    assert final.files == 3 + BIG_FILES * (attempt + 1)
    assert build_folders(index) == [current_build(index)]
    assert not [p for p in index.iterdir() if p.name.startswith("CURRENT.")]


# --------------------------------------------------------------------------- errors


def damage(index: Path) -> dict[Path, bytes]:
    """Overwrite every data file of the current build (not its manifest) with garbage; returns
    the damaged folder's content, to check nothing repairs it behind the user's back."""
    folder = index / current_build(index)
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "manifest.json":
            path.write_bytes(b"garbage")
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_damaged_index_is_reported_by_readers_and_rebuilt_by_the_next_build(tiny_corpus, index,
                                                                            caplog):
    """Readers say one line; the next build (``rag index``, or ``rag ask`` updating first) finds
    the damage from the manifest's recorded sizes alone, warns once and rebuilds from scratch."""
    damage(index)
    with pytest.raises(IndexStoreError, match="damaged.*rag index --rebuild"):
        load_index(index)
    with caplog.at_level(logging.WARNING):
        repaired = build_fake_index(tiny_corpus, index)
    assert repaired.full_rebuild and repaired.repaired and "damaged" in repaired.reason
    assert repaired.embedded == repaired.chunks and repaired.reused == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0]
    assert len(load_index(index).chunks) == repaired.chunks
    assert build_folders(index) == [current_build(index)]  # the damaged build is gone


def test_damage_found_only_when_loading_is_rebuilt_too(tiny_corpus, index):
    """A data file overwritten with bytes of the same size passes the quick check; an update
    that must load the index finds it then, and rebuilds."""
    chunks_file = index / current_build(index) / "chunks.jsonl"
    chunks_file.write_bytes(b"x" * chunks_file.stat().st_size)
    with pytest.raises(IndexStoreError, match="damaged"):
        load_index(index)
    (tiny_corpus / "new.txt").write_text("Une phrase nouvelle sur les chefs d'État réunis.\n",
                                         encoding="utf-8")
    report = build_fake_index(tiny_corpus, index)
    assert report.repaired and report.embedded == report.chunks
    assert load_index(index).manifest["counts"]["files"] == 4


def test_the_unchanged_check_reads_only_the_manifest(tiny_corpus, index, monkeypatch):
    """No vector, no BM25 array, no chunk record is loaded and no file is parsed to find that
    nothing changed: only ``CURRENT``, ``manifest.json`` and the corpus files' bytes are read."""
    import rag.index

    def forbidden(*args, **kwargs):
        raise AssertionError("the unchanged check must not load or parse this")

    for owner, name in ((rag.index.FaissVectorStore, "load"), (rag.index.LexicalIndex, "load"),
                        (rag.index, "_read_jsonl"), (rag.index, "parse_document"),
                        (rag.index, "split_document")):
        monkeypatch.setattr(owner, name, forbidden)
    report = update_index(tiny_corpus, index, FAKE_SETTINGS,
                          lambda: pytest.fail("the model must not be loaded"))
    assert (report.files, report.embedded, report.reused) == (3, 0, report.chunks)


def test_an_update_reads_only_the_files_that_changed(tiny_corpus, index, monkeypatch):
    import rag.index
    parsed: list[str] = []
    real = rag.index.parse_document

    def spy(source, data, min_words, *rest):
        parsed.append(source)
        return real(source, data, min_words, *rest)

    monkeypatch.setattr(rag.index, "parse_document", spy)
    (tiny_corpus / "tour.txt").write_text("Le Tour de France partira de Lille cette année, en "
                                          "juillet, pour trois semaines.\n", encoding="utf-8")
    report = build_fake_index(tiny_corpus, index)
    assert parsed == ["tour.txt"] and report.embedded == 1 and report.reused == report.chunks - 1


def test_files_without_text_are_remembered_and_do_not_force_a_build(tiny_corpus, index, caplog):
    """A binary or empty file is recorded with its hash as skipped: the next run finds the
    corpus unchanged (and warns again), instead of writing the same index each time."""
    (tiny_corpus / "blob.txt").write_bytes(bytes(range(1, 256)) * 40)
    (tiny_corpus / "vide.md").write_text("\n  \n", encoding="utf-8")
    first = build_fake_index(tiny_corpus, index)
    assert first.files == 3 and first.embedded == 0
    assert set(manifest_of(index)["skipped"]) == {"blob.txt", "vide.md"}
    built = current_build(index)
    with caplog.at_level(logging.WARNING):
        again = update_index(tiny_corpus, index, FAKE_SETTINGS,
                             lambda: pytest.fail("the model must not be loaded"))
    assert again.embedded == 0 and current_build(index) == built
    assert "blob.txt" in caplog.text and "vide.md" in caplog.text


def test_other_format_version_asks_for_rebuild(tiny_corpus, index, rag_main):
    manifest_path = index / current_build(index) / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["format_version"] += 1
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    result = rag_main("index", "--corpus", tiny_corpus, "--index", index, "--model", FAKE_MODEL)
    assert_one_line_error(result, "format version", "--rebuild")
    assert json.loads(manifest_path.read_text(encoding="utf-8")) == manifest  # left alone


def test_index_cli_summary_and_errors(tiny_corpus, index, tmp_path, rag_main):
    result = rag_main("index", "--corpus", tiny_corpus, "--index", index, "--model", FAKE_MODEL,
                      "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"files", "chunks", "embedded", "reused", "removed", "seconds"}
    assert (summary["files"], summary["embedded"], summary["removed"]) == (3, 0, 0)
    assert summary["reused"] == summary["chunks"] == len(load_index(index).chunks)
    human = rag_main("index", "--corpus", tiny_corpus, "--index", index, "--model", FAKE_MODEL)
    assert human.returncode == 0 and "3 files" in human.stdout and "0 embedded" in human.stdout

    # Something to embed, with a model that cannot be loaded: one line, and the index unchanged.
    (tiny_corpus / "new.txt").write_text("Une phrase nouvelle sur les chefs d'État réunis.\n",
                                         encoding="utf-8")
    current = current_build(index)
    assert_one_line_error(rag_main("index", "--corpus", tiny_corpus, "--index", index,
                                   "--model", FAKE_MODEL), "not available offline")
    assert current_build(index) == current and build_folders(index) == [current]

    (tmp_path / "emptydir").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "emptydir"):
        assert_one_line_error(rag_main("index", "--corpus", bad, "--index", tmp_path / "j"))
    assert not (tmp_path / "j").exists()


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_index_records_the_model_and_reuses_exact_vectors(tmp_path, rag_main):
    """The bundled model's name and weights hash go into the manifest; a fake index is rebuilt
    by it (saying why); vectors it reuses on an update equal the ones it computes afresh."""
    from rag.embedder import load_embedder
    corpus = write_tiny_corpus(tmp_path / "corpus")
    index = tmp_path / "index"
    build_fake_index(corpus, index)
    switched = rag_main("index", "--corpus", corpus, "--index", index)
    assert switched.returncode == 0, switched.stderr
    assert f"model changed ({FAKE_MODEL} -> multilingual-e5-small)" in switched.stderr
    manifest = manifest_of(index)
    assert manifest["model"]["name"] == "multilingual-e5-small"
    assert manifest["model"]["weights_hash"] == load_embedder().weights_hash
    assert len(manifest["model"]["weights_hash"]) == 64

    (corpus / "extra.txt").write_text((SEEDS / "000_024703823b32d0c5.txt").read_text()[:600],
                                      encoding="utf-8")
    update = json.loads(rag_main("index", "--corpus", corpus, "--index", index, "--json").stdout)
    assert update["embedded"] > 0 and update["reused"] > 0
    rag_main("index", "--corpus", corpus, "--index", tmp_path / "scratch")
    real = load_embedder()
    only_retrieval = SearchSettings(answerer="extractive")  # the passages are all that matter

    def scores(folder: Path) -> list[list[tuple[str, float]]]:
        assistant = Assistant(corpus, folder, search=only_retrieval, update=False, embedder=real)
        return [[(p.chunk_id, p.score) for p in assistant.ask(q, retriever="dense").passages]
                for q in QUESTIONS]

    for incremental, fresh in zip(scores(index), scores(tmp_path / "scratch")):
        assert [i for i, _ in incremental] == [i for i, _ in fresh]
        np.testing.assert_allclose([s for _, s in incremental], [s for _, s in fresh], atol=1e-5)


def test_the_manifest_records_how_each_store_searches(tmp_path):
    """A small corpus is searched exactly; the manifest says so, with the size it switches at."""
    corpus = write_tiny_corpus(tmp_path / "corpus")
    build_fake_index(corpus, tmp_path / "index")
    stores = manifest_of(tmp_path / "index")["vector_stores"]
    index = load_index(tmp_path / "index")
    assert stores["chunks"]["kind"] == "flat" and stores["sentences"]["kind"] == "flat"
    assert stores["chunks"]["vectors"] == len(index.chunks)
    assert stores["sentences"]["vectors"] == len(index.sentences)
    assert stores["chunks"]["exact_limit"] == 100_000
