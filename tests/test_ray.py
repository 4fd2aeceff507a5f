"""``rag index --ray``: embedding on a real Ray cluster gives the index a local build gives.

The cluster tests start two Ray nodes on this machine (tests/ray_fixtures.py) and load the real
model in two actors, one per node: ``slow``. What they hold the cluster path to: the same chunk
ids and manifest as a local build, vectors equal within fp32 noise, both nodes doing work,
incremental updates across local and cluster builds, a node killed mid-build either absorbed by
Ray's retries (and the vectors still right) or reported in one line with the previous index
still current, and an address nobody answers at refused in one line, exit 2.
"""
from __future__ import annotations

import json
import random
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from ray_fixtures import node_pids, processes_naming, ray_cluster  # noqa: F401 (fixture)

from rag.config import ClusterSettings, IndexSettings
from rag.errors import ClusterError
from rag.index import current_build, load_index, update_index

ROOT = Path(__file__).resolve().parent.parent
PIAF = ROOT.parent / "shared" / "bench" / "piaf"
SETTINGS = IndexSettings()
#: Two actors (one per node): each holds the model (about 0.5 GB), and the machine has 2 cores.
#: Small batches: several per actor, so a node can die with work in flight.
RAY = ClusterSettings(actors=2, batch_size=16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_on(address: str, corpus: Path, index_dir: Path, cluster: ClusterSettings = RAY,
              on_batch=None, rebuild: bool = False):
    """``update_index`` through the cluster at ``address``; returns (report, encoder or None)."""
    from rag.ray_embed import ray_encoder_factory
    used = []
    with ray_encoder_factory(address, SETTINGS.model, SETTINGS.precision, cluster) as load:
        def load_model():
            encoder = load()
            encoder.on_batch = on_batch
            used.append(encoder)
            return encoder

        report = update_index(corpus, index_dir, SETTINGS, load_model, rebuild=rebuild)
    return report, (used[0] if used else None)


def _vectors(index, kind: str) -> tuple[list[str], np.ndarray]:
    store = index.chunk_vectors if kind == "chunks" else index.sentence_vectors
    ids = list(store.ids)
    return ids, store.get(ids)


def _assert_same_index(built: Path, reference: Path) -> None:
    """Same files, chunk ids, sentence ids and model in the manifests; vectors within 1e-5."""
    ours, theirs = load_index(built), load_index(reference)
    for key in ("files", "counts", "model", "settings"):
        assert ours.manifest[key] == theirs.manifest[key], key
    for kind in ("chunks", "sentences"):
        ids, vectors = _vectors(ours, kind)
        ref_ids, ref_vectors = _vectors(theirs, kind)
        assert ids == ref_ids
        assert np.allclose(vectors, ref_vectors, atol=1e-5), (
            kind, float(np.abs(vectors - ref_vectors).max()))


# --------------------------------------------------------------------------- fast


def test_unreachable_cluster_is_one_line_exit_2(tiny_corpus, tmp_path, rag_main):
    port = _free_port()  # nobody listens there
    result = rag_main("index", "--corpus", tiny_corpus, "--index", tmp_path / "index",
                      "--ray", f"127.0.0.1:{port}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "ray start" in lines[0], lines
    assert not (tmp_path / "index" / "CURRENT").exists()  # nothing was written


def test_bad_ray_address_says_the_form(tiny_corpus, tmp_path, rag_main):
    result = rag_main("index", "--corpus", tiny_corpus, "--index", tmp_path / "index",
                      "--ray", "no-port-here")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unchanged_corpus_never_contacts_the_cluster(tiny_index, tiny_corpus, rag_main):
    """Up to date: no model, no cluster, even at an address where none answers."""
    from fake_embedder import FAKE_MODEL
    result = rag_main("index", "--corpus", tiny_corpus, "--index", tiny_index, "--model",
                      FAKE_MODEL, "--ray", f"127.0.0.1:{_free_port()}", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["embedded"] == 0


# --------------------------------------------------------------------------- on a cluster


@pytest.mark.slow
def test_cluster_build_equals_local_build(ray_cluster, assistant, tmp_path):
    """The seeds through both nodes: the local build's manifest and vectors; then a changed file
    is the only one embedded again, and a local run finds the cluster's index up to date."""
    corpus = tmp_path / "seeds"
    shutil.copytree(assistant.corpus, corpus)
    index_dir = tmp_path / "index"
    report, encoder = _build_on(ray_cluster.address, corpus, index_dir)
    assert report.embedded == report.chunks == assistant.index.manifest["counts"]["chunks"]
    assert len(encoder.nodes_used) == 2  # both nodes embedded
    _assert_same_index(index_dir, assistant.index_dir)

    # Incremental: one changed file, embedded on the cluster; the rest reused.
    changed = sorted(corpus.iterdir())[0]
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nUn paragraphe ajouté pour "
                       "le test de la grappe.\n", encoding="utf-8")
    report, _ = _build_on(ray_cluster.address, corpus, index_dir)
    per_file = load_index(index_dir).manifest["files"]
    assert report.embedded == len(per_file[changed.name]["chunks"])
    assert report.reused == report.chunks - report.embedded > 0

    # The cluster's index is the local program's index: a local run embeds nothing.
    from rag.embedder import load_embedder
    local = update_index(corpus, index_dir, SETTINGS, lambda: load_embedder())
    assert local.embedded == 0 and not local.full_rebuild


@pytest.mark.slow
@pytest.mark.skipif(not (PIAF / "corpus").is_dir(), reason="PIAF benchmark not present")
def test_piaf_slice_through_the_cluster(ray_cluster, assistant, tmp_path):
    """Twenty PIAF articles: every chunk embedded on the cluster, vectors equal to the local
    model's (a sample), and questions about them find their article."""
    names = sorted(p.name for p in (PIAF / "corpus").glob("*.txt"))[:20]
    corpus = tmp_path / "piaf"
    corpus.mkdir()
    for name in names:  # a temporary copy, outside the project
        shutil.copyfile(PIAF / "corpus" / name, corpus / name)
    report, encoder = _build_on(ray_cluster.address, corpus, tmp_path / "index")
    assert report.files == 20 and report.embedded == report.chunks > 20
    assert len(encoder.nodes_used) == 2
    index = load_index(tmp_path / "index")

    embedder = assistant.embedder  # the local model
    sample = random.Random(7).sample(index.chunks, 12)
    local = embedder.encode_passages([c.text for c in sample])
    assert np.allclose(index.chunk_vectors.get([c.id for c in sample]), local, atol=1e-5)

    questions = [q for q in map(json.loads, (PIAF / "questions.jsonl").open(encoding="utf-8"))
                 if q["sources"][0] in names][:40]
    assert len(questions) >= 20
    vectors = embedder.encode_queries([q["question"] for q in questions])
    found = 0
    for q, vector in zip(questions, vectors):
        top = index.chunk_vectors.search(vector, 5)
        found += q["sources"][0] in {index.chunk(cid).source for cid, _ in top}
    assert found / len(questions) >= 0.8, found


@pytest.mark.slow
def test_node_killed_mid_build(ray_cluster, assistant, tmp_path):
    """The worker node's processes are killed after the first batch comes back. Ray restarts
    its actor on the head and retries its batches: the build completes with the right vectors,
    or it fails with one line and the previous index stays current. Runs last: it takes a node
    away (and adds a fresh one after)."""
    corpus = tmp_path / "seeds"
    shutil.copytree(assistant.corpus, corpus)
    index_dir = tmp_path / "index"
    shutil.copytree(assistant.index_dir, index_dir)
    before = current_build(index_dir)
    worker = ray_cluster.worker_nodes and next(iter(ray_cluster.worker_nodes))
    assert worker, "the cluster has no worker node"
    pids = node_pids(worker)
    killed = []

    def kill_once(done: int, total: int) -> None:
        if not killed:
            ray_cluster.remove_node(worker, allow_graceful=False)
            killed.append((done, total))

    small = ClusterSettings(actors=2, batch_size=4)  # many batches in flight on both nodes
    try:
        try:
            report, _ = _build_on(ray_cluster.address, corpus, index_dir, small, kill_once,
                                  rebuild=True)
        except ClusterError as exc:
            message = str(exc)
            print(f"node killed after {killed}: the build failed: {message}")
            assert len(message.splitlines()) == 1 and "previous index is still in use" in message
            assert current_build(index_dir) == before
            assert load_index(index_dir).manifest["counts"] == assistant.index.manifest["counts"]
        else:
            print(f"node killed after {killed}: the build completed")
            assert report.embedded == report.chunks
            assert current_build(index_dir) != before
            _assert_same_index(index_dir, assistant.index_dir)
        assert killed and killed[0][0] < killed[0][1], killed  # it died mid-build
        assert not [p for p in pids if p in processes_naming("")], "the node's processes live"
    finally:
        if not ray_cluster.worker_nodes:
            ray_cluster.add_node(num_cpus=2, include_dashboard=False,
                                 object_store_memory=200 << 20)
