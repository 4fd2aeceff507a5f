"""The README's promises: its Python example runs as written, and its two commands exist."""
from __future__ import annotations

import re
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_readme_python_example_runs(capsys, monkeypatch):
    """The example as a user runs it from the repository: the real model, the default index
    folder (under the session's RAG_CACHE_DIR, see tests/conftest.py: never the user's own)."""
    monkeypatch.chdir(ROOT)  # the example names the corpus "seeds", relative to the checkout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Palm Beach" in out and "[1]" in out
    assert re.search(r"^1 001_f8703a92264a5ef2\.txt 2 2$", out, re.M)


def test_readme_opens_with_the_two_make_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "chat"], ["make", "test"]]
    targets = subprocess.run(["make", "-n", "chat", "test"], cwd=ROOT, capture_output=True,
                             text=True)
    assert targets.returncode == 0, targets.stderr
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
