"""Outputs of notebooks/*.ipynb never reach a commit (nbstripout as a git filter, set up by `make venv`), while the
nbval goldens in tests/notebooks/ keep theirs: their outputs are the test (issue 21)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from armlib.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def notebook_with_output() -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": 3, "id": "a1", "metadata": {},
                       "outputs": [{"name": "stdout", "output_type": "stream", "text": ["42\n"]}],
                       "source": ["print(42)"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def test_make_strips_outputs_of_notebooks_and_never_of_the_goldens(tmp_path):
    pytest.importorskip("nbstripout")
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "tests" / "notebooks").mkdir(parents=True)
    git(repo, "init", "-q")
    shutil.copy(REPO_ROOT / ".gitattributes", repo / ".gitattributes")
    for folder in ("notebooks", "tests/notebooks"):
        (repo / folder / "nb.ipynb").write_text(json.dumps(notebook_with_output(), indent=1))
    subprocess.run(["sh", str(REPO_ROOT / "scripts" / "strip_notebook_outputs.sh"), str(Path(sys.executable).parent)],
                   cwd=repo, check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "notebooks")
    stripped = json.loads(git(repo, "show", "HEAD:notebooks/nb.ipynb"))
    golden = json.loads(git(repo, "show", "HEAD:tests/notebooks/nb.ipynb"))
    assert stripped["cells"][0]["outputs"] == [] and stripped["cells"][0]["execution_count"] is None
    assert stripped["cells"][0]["id"] == "a1" and stripped["cells"][0]["source"] == ["print(42)"]
    assert golden == notebook_with_output()


def test_the_makefile_sets_it_up():
    assert "scripts/strip_notebook_outputs.sh" in (REPO_ROOT / "Makefile").read_text()
