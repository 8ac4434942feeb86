"""armlib.paths.git_revision: the revision stamp of records and reports."""
import shutil
import subprocess

import pytest

from armlib.paths import git_revision

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "index.html").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def test_clean_checkout_short_and_full_hash(repo):
    full = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert git_revision(repo, short=False) == full
    short = git_revision(repo)
    assert full.startswith(short) and len(short) < len(full)


def test_rewritten_reference_report_is_not_dirty_but_changed_code_is(repo):
    """The bug this guards: regenerating reports/quick stamped the fresh reference "+dirty"."""
    (repo / "reports" / "index.html").write_text("regenerated\n")
    assert not git_revision(repo).endswith("+dirty")
    (repo / "code.py").write_text("x = 2\n")
    assert git_revision(repo).endswith("+dirty")


def test_outside_a_checkout_is_none(tmp_path):
    assert git_revision(tmp_path) is None


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """mkstemp creates 0600 files: results written that way were unreadable to the rest of a lab."""
    import os
    import stat

    from armlib.paths import atomic_write_text
    from armlib.runs import atomic_torch_save

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x")
        atomic_torch_save({"x": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.csv", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_setting_up_the_notebook_filter_leaves_no_notebook_for_status_to_refilter(repo):
    """The bug this guards: in a fresh clone every `git status` ran nbstripout on each notebook again (racily
    clean entries), past git_revision's timeout, so a fresh clone's `make report` stamped no record. After the
    set-up script, status must not need the filter: a filter that fails proves it is not run."""
    import os
    import sys
    import time

    from armlib.paths import REPO_ROOT

    (repo / "notebooks").mkdir()
    notebook = repo / "notebooks" / "a.ipynb"
    raw = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
    stripped = subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id"], input=raw, capture_output=True,
                              text=True, check=True).stdout   # committed as the filter writes it, as in the repo
    notebook.write_text(stripped)
    shutil.copy(REPO_ROOT / ".gitattributes", repo / ".gitattributes")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "notebook")
    past = time.time() - 100   # the stat git stored no longer matches: status must look at the content
    os.utime(notebook, (past, past))
    setup = REPO_ROOT / "scripts" / "strip_notebook_outputs.sh"
    subprocess.run(["sh", str(setup), os.path.dirname(sys.executable)], cwd=repo, check=True, capture_output=True)
    status = subprocess.run(["git", "-c", "filter.nbstripout.clean=false", "status", "--porcelain", "-uno"], cwd=repo,
                            capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout == "", status.stderr
    assert git_revision(repo) is not None and not git_revision(repo).endswith("+dirty")
