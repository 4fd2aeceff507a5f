"""The index folder: incremental updates, full rebuilds, atomic writes and clear errors."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SEEDS, run_rag
from rag.config import IndexSettings
from rag.embedder import load_embedder
from rag.index import FORMAT_VERSION, IndexStoreError, load_index, update_index

SETTINGS = IndexSettings()


def build(corpus: Path, index: Path, settings: IndexSettings = SETTINGS, **kw):
    return update_index(corpus, index, settings, lambda: load_embedder(settings.model), **kw)


@pytest.fixture()
def corpus(tmp_path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture(scope="module")
def seeds_index_template(tmp_path_factory) -> Path:
    """The seeds indexed once; tests start from a copy instead of embedding everything again."""
    folder = tmp_path_factory.mktemp("template") / "index"
    build(SEEDS, folder)
    return folder


@pytest.fixture()
def index(seeds_index_template, tmp_path) -> Path:
    """A fresh copy of the seeds index (valid for the ``corpus`` copy: same file contents)."""
    target = tmp_path / "index"
    shutil.copytree(seeds_index_template, target)
    return target


def test_incremental_add_change_delete(corpus, tmp_path):
    index = tmp_path / "fresh"
    first = build(corpus, index)
    assert first.files == 5 and first.embedded == first.chunks > 0 and first.reused == 0
    again = build(corpus, index)
    assert (again.embedded, again.reused, again.removed) == (0, first.chunks, 0)

    (corpus / "new.txt").write_text("Le nouveau fichier parle du sommet de Vilnius en juillet 2023.\n")
    added = build(corpus, index)
    assert added.embedded == 1 and added.reused == first.chunks and added.files == 6

    changed_file = corpus / "000_024703823b32d0c5.txt"
    changed_file.write_text(changed_file.read_text() + "Une phrase ajoutée à la fin de l'article.\n")
    changed = build(corpus, index)
    old_chunks_000 = len(json.loads((index / (index / "CURRENT").read_text().strip() / "manifest.json")
                                    .read_text())["files"]["000_024703823b32d0c5.txt"]["chunks"])
    assert changed.embedded == old_chunks_000
    assert changed.reused == changed.chunks - old_chunks_000

    (corpus / "new.txt").unlink()
    removed = build(corpus, index)
    assert removed.removed == 1 and removed.embedded == 0 and removed.files == 5

    loaded = load_index(index)
    assert sorted(loaded.manifest["files"]) == sorted(p.name for p in corpus.iterdir())
    assert loaded.dense.ntotal == len(loaded.chunks) == removed.chunks


def test_reused_vectors_equal_fresh_ones(corpus, index, tmp_path):
    (corpus / "extra.txt").write_text("Un fichier de plus pour forcer une mise à jour partielle.\n")
    build(corpus, index)
    build(corpus, tmp_path / "b")
    a, b = load_index(index), load_index(tmp_path / "b")
    assert [c.id for c in a.chunks] == [c.id for c in b.chunks]
    np.testing.assert_allclose(a.chunk_vectors, b.chunk_vectors, atol=1e-5)
    np.testing.assert_allclose(a.sentence_vectors, b.sentence_vectors, atol=1e-5)


def test_settings_change_triggers_full_rebuild(corpus, index):
    report = build(corpus, index, IndexSettings(chunk_size=400))
    assert report.full_rebuild and "chunk_size" in report.reason
    assert report.reused == 0 and report.embedded == report.chunks


def test_manifest_records_model_settings_and_files(index):
    manifest = load_index(index).manifest
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["model"]["name"] == SETTINGS.model and len(manifest["model"]["weights_hash"]) == 64
    assert manifest["settings"] == SETTINGS.to_json()
    for entry in manifest["files"].values():
        assert len(entry["hash"]) == 64 and entry["chunks"]
    folder = index / (index / "CURRENT").read_text().strip()
    for path in folder.rglob("*"):  # nothing the program loads is a pickle
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        assert path.suffix not in (".pkl", ".pickle")


def test_unchanged_run_is_fast_and_loads_no_model(corpus, index):
    started = time.perf_counter()
    report = update_index(corpus, index, SETTINGS,
                          lambda: pytest.fail("the model must not be loaded"))
    assert report.embedded == 0 and time.perf_counter() - started < 2


def test_a_killed_build_leaves_the_previous_index_loadable(corpus, index):
    before = load_index(index)
    big = " ".join(f"Phrase numéro {i} sur la défense européenne et l'OTAN." for i in range(400))
    for delay in (3.0, 6.0, 9.0):
        (corpus / f"big{delay}.txt").write_text(big)
        proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--corpus", str(corpus),
                                 "--index", str(index)], cwd=ROOT)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = load_index(index)  # must not raise
        assert after.dense.ntotal == len(after.chunks)
        assert {c.id for c in before.chunks} <= {c.id for c in after.chunks}
    leftovers = [p.name for p in index.iterdir() if p.name.startswith("build-")]
    assert (index / "CURRENT").read_text().strip() in leftovers
    final = build(corpus, index)  # a later run completes and cleans up
    assert final.files == 8
    assert len([p for p in index.iterdir() if p.name.startswith("build-")]) == 1


def test_damaged_index_is_reported_and_left_alone(corpus, index):
    folder = index / (index / "CURRENT").read_text().strip()
    (folder / "dense.faiss").write_bytes(b"garbage")
    snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(IndexStoreError, match="rag index --rebuild"):
        load_index(index)
    result = run_rag("ask", "Qui est Mark Rutte ?", "--corpus", corpus, "--index", index)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "--rebuild" in result.stderr
    assert snapshot == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    repaired = build(corpus, index, rebuild=True)
    assert repaired.full_rebuild and repaired.embedded == repaired.chunks
    assert load_index(index).dense.ntotal == repaired.chunks


def test_other_format_version_asks_for_rebuild(corpus, index):
    manifest_path = index / (index / "CURRENT").read_text().strip() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    result = run_rag("index", "--corpus", corpus, "--index", index)
    assert result.returncode == 2 and "format version" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(manifest_path.read_text())["format_version"] == FORMAT_VERSION + 1


def test_index_cli_summary_and_errors(corpus, index, tmp_path):
    (corpus / "extra.md").write_text("# Note\n\nUne note ajoutée au corpus pour la mise à jour.\n")
    result = run_rag("index", "--corpus", corpus, "--index", index, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"files", "chunks", "embedded", "reused", "removed", "seconds"}
    assert summary["files"] == 6 and summary["embedded"] == 1
    assert summary["reused"] == summary["chunks"] - 1
    human = run_rag("index", "--corpus", corpus, "--index", index)
    assert "0 embedded" in human.stdout
    for bad in (tmp_path / "missing", tmp_path / "emptydir"):
        (tmp_path / "emptydir").mkdir(exist_ok=True)
        result = run_rag("index", "--corpus", bad, "--index", tmp_path / "j")
        assert result.returncode == 2
        assert result.stderr.startswith("rag: error:") and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "j").exists()
