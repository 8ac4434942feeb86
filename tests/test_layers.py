"""The package is layered one way (pyproject.toml's import-linter contract): no module imports one above it."""
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0, "run `lint-imports` for the broken arrow"


def test_the_contract_can_fail(monkeypatch, tmp_path):
    """A contract that puts the report below the trainer must be broken: the test above is not vacuous."""
    from importlinter.cli import lint_imports

    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    broken = text[start:].replace('"armlib.reproduction.report",\n', "").replace('"armlib.paths",\n', '"armlib.paths",\n    "armlib.reproduction.report",\n')
    (tmp_path / "pyproject.toml").write_text(broken)
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(tmp_path / "pyproject.toml")) != 0


def test_the_renderer_contract_can_fail(monkeypatch, tmp_path):
    """The renderer's contract with a module it does import (stats) added to the forbidden ones is broken: the
    contract sees the renderer's imports and is not vacuous."""
    from importlinter.cli import lint_imports

    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    broken = text[start:].replace('forbidden_modules = ["armlib.train",', 'forbidden_modules = ["armlib.reproduction.stats", "armlib.train",')
    assert broken != text[start:]
    (tmp_path / "pyproject.toml").write_text(broken)
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(tmp_path / "pyproject.toml")) != 0
