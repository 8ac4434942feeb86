"""Notebooks: parameterised, logic-free, and their nbval goldens in step with them."""
import ast
import json
from pathlib import Path

import pytest

from armlib.reproduction.reproduce import GOLDEN_DIR, NOTEBOOKS, notebook_path

REQUIRED_PARAMETERS = {"scale", "seeds", "data_root", "device", "out_dir", "runs_dir", "jobs"}


def cells(path: Path, kind: str | None = None) -> list[dict]:
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if kind is None or c["cell_type"] == kind]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("key", NOTEBOOKS)
def test_notebook_has_literal_parameters_with_defaults_for_jupyterlab(key):
    params = [c for c in cells(notebook_path(key), "code") if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(source(params[0]))
    names = set()
    for node in tree.body:
        # papermill cannot update computed values: literal assignments only (typed where papermill can
        # parse the type, which it cannot for "X | None")
        assert isinstance(node, (ast.AnnAssign, ast.Assign)), "parameters are literal assignments only"
        ast.literal_eval(node.value)
        names.add(node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id)
    assert names == REQUIRED_PARAMETERS
    assert 'scale: str = "quick"' in source(params[0])   # JupyterLab users get the quick scale


@pytest.mark.parametrize("key", NOTEBOOKS)
def test_notebook_holds_no_logic(key):
    """Calls and plots only: no definitions, loops or branches (those belong in armlib)."""
    for cell in cells(notebook_path(key), "code"):
        for node in ast.walk(ast.parse(source(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.Lambda,
                                         ast.ListComp, ast.DictComp)), f"{key}: {ast.dump(node)[:80]}"


@pytest.mark.parametrize("key", NOTEBOOKS)
def test_notebook_states_the_claim_and_the_finding(key):
    md = [source(c) for c in cells(notebook_path(key), "markdown")]
    assert "What the paper claims" in md[0]
    assert md[-1].startswith("## What we found")


@pytest.mark.parametrize("key", NOTEBOOKS)
def test_golden_cells_match_the_notebook(key):
    """nbval runs the golden's stored cells: a golden that drifted from its notebook tests nothing.
    Regenerate with `make goldens` after editing a notebook."""
    golden = GOLDEN_DIR / f"{key}.ipynb"
    assert golden.exists(), f"missing golden {golden}: run `make goldens`"
    ours = [(c["cell_type"], source(c)) for c in cells(notebook_path(key))]
    theirs = [(c["cell_type"], source(c)) for c in cells(golden)
              if "injected-parameters" not in c["metadata"].get("tags", [])]
    assert theirs == ours
    injected = [c for c in cells(golden) if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and 'scale = "smoke"' in source(injected[0])
