"""Shared fixtures, and the environment every test (and every subprocess it starts) runs in.

Two kinds of tests:

* fast ones (the default): the deterministic fake embedder of ``tests/fake_embedder.py`` over a
  tiny French corpus the test writes (``tiny_corpus``; ``tiny_index`` is its index, copied from
  one built per session; ``fake_assistant`` asks questions about it);
* ``@pytest.mark.slow`` ones: the real multilingual-e5-small over the seeds (``assistant``, built
  once per session), the model's own checks, the evaluation's quality gate.

``python -m pytest -m "not slow and not browser"`` runs the first kind in seconds; plain
``python -m pytest`` (``make test``, CI) runs everything.

The cache folder (``RAG_CACHE_DIR``) is set once, here, before any test module is imported, to a
fresh folder for this session, so that no test reads or writes the user's own indexes (the README
example indexes ``seeds/`` into the default index folder, for instance). Its ``models/`` is a
symlink to the user's real model cache (``~/.cache/rag/models``, or wherever ``RAG_CACHE_DIR`` /
``XDG_CACHE_HOME`` put it before the session): converting the bundled model writes about 470 MB
and takes 10 to 20 seconds, always gives the same folder (its name carries the weights' hash) and
is atomic, so every session and the user's own ``rag`` runs share one conversion instead of
redoing it per session. The session folder is removed at the end (the symlink is unlinked, never
followed). A test that needs a cache of its own (the conversion test) monkeypatches
``RAG_CACHE_DIR`` on top of this.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.config import cache_dir, set_offline_environment

set_offline_environment()  # before any test module imports transformers or gradio

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"


def _session_cache_dir() -> Path:
    """A fresh cache folder whose ``models/`` is the user's real model cache (see above)."""
    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix="rag-tests-cache-"))
    (session / "models").symlink_to(models.resolve(), target_is_directory=True)
    return session


def _remove_session_cache() -> None:
    if (SESSION_CACHE / "models").is_symlink():
        (SESSION_CACHE / "models").unlink()  # the link only, never the models it points to
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


SESSION_CACHE = _session_cache_dir()
os.environ["RAG_CACHE_DIR"] = str(SESSION_CACHE)
atexit.register(_remove_session_cache)


# --------------------------------------------------------------------------- the tiny corpus

#: Three short French documents (one in a sub-folder, one Markdown) with about one fact per line,
#: so a citation's line numbers can be checked by eye; sommet.txt is long enough to make two
#: chunks. Each talks about something else: a question about one shares its words with it only.
TINY_FILES = {
    "sommet.txt": """Le sommet de l'alliance à La Haye

Le prochain sommet de l'alliance atlantique se tiendra à La Haye au mois de juin.
Les chefs d'État y discuteront du budget de la défense européenne.

Le secrétaire général a présenté le programme du sommet aux journalistes réunis à Bruxelles.
Il a rappelé que chaque pays membre doit consacrer deux pour cent de sa richesse à ses armées.
La moitié des membres n'atteint pas encore cet objectif, selon le rapport annuel.

La délégation canadienne arrivera la veille de l'ouverture, accompagnée de plusieurs ministres.
Les hôtels du centre-ville affichent déjà complet pour toute la durée de la réunion.

Les manifestants ont prévu un rassemblement pacifique devant le palais des congrès le premier jour.
La police néerlandaise déploiera quatre mille agents autour du quartier pendant toute la réunion.
""",
    "fromages/camembert.md": """# Le camembert de Normandie

Le camembert est un fromage au lait cru fabriqué en Normandie depuis le dix-huitième siècle.
Selon la tradition, Marie Harel aurait inventé la recette du camembert en 1791 dans le village de Camembert.

La production annuelle dépasse 300 millions de boîtes vendues en France et à l'étranger.
""",
    "tour.txt": """Le Tour de France cycliste partira cette année de la ville de Lille le 5 juillet.
Les coureurs parcourront 3 400 kilomètres en vingt et une étapes à travers le pays.

L'arrivée finale est prévue sur les Champs-Élysées à Paris à la fin du mois de juillet.
""",
}


def write_tiny_corpus(folder: Path) -> Path:
    """Write :data:`TINY_FILES` into ``folder`` (created) and return it."""
    for name, text in TINY_FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture()
def tiny_corpus(tmp_path) -> Path:
    """A fresh copy of the tiny corpus, which the test may change."""
    return write_tiny_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny corpus and its fake index, built once per session: (corpus, index).

    Read-only. A build fsyncs every file it writes, which costs more than the build itself, so
    tests that need an index to change copy this one (``tiny_index``) instead of building it.
    """
    from fake_embedder import build_fake_index
    folder = tmp_path_factory.mktemp("tiny")
    corpus = write_tiny_corpus(folder / "corpus")
    build_fake_index(corpus, folder / "index")
    return corpus, folder / "index"


@pytest.fixture()
def tiny_index(tiny_template, tiny_corpus, tmp_path) -> Path:
    """A fresh copy of the tiny corpus's fake index, up to date for ``tiny_corpus`` (same files)."""
    target = tmp_path / "index"
    shutil.copytree(tiny_template[1], target)
    return target


@pytest.fixture(scope="session")
def fake_assistant(tiny_template):
    """An ``Assistant`` over the tiny corpus with the fake embedder, shared by the session:
    tests only ask it questions (its corpus is ``fake_assistant.corpus``)."""
    from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder

    from rag.assistant import Assistant
    corpus, index = tiny_template
    return Assistant(corpus, index, index_settings=FAKE_SETTINGS, search=FAKE_SEARCH,
                     embedder=FakeEmbedder())


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def seeds_copy(tmp_path_factory) -> Path:
    """A private copy of the seeds, so tests never touch the shipped corpus."""
    target = tmp_path_factory.mktemp("corpus") / "seeds"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture(scope="session")
def assistant(seeds_copy, tmp_path_factory):
    """The real assistant over the seeds, built once per session (real model: ``slow`` tests
    only)."""
    from rag.assistant import Assistant
    return Assistant(seeds_copy, tmp_path_factory.mktemp("index"))


# --------------------------------------------------------------------------- the command line


@dataclass
class CliResult:
    """What one ``rag`` command did: the fields of ``subprocess.CompletedProcess`` tests read."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def rag_main(capsys):
    """Run ``rag.cli.main(argv)`` in this process and capture its output.

    In-process is what almost every CLI test wants: the same code, no interpreter start, and a
    model already loaded by an earlier test is reused. Only the process boundary itself (a kill
    during a build, the ``python -m rag.cli`` entry point) needs :func:`run_rag`.
    """
    from rag.cli import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def run_rag(*args: object, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `rag` command line in a subprocess and capture its output."""
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result: CliResult | subprocess.CompletedProcess, *words: str) -> None:
    """The CLI's promise for an error a user can cause: status 2, one line, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("rag: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
