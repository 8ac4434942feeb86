"""The project's set-up files agree with each other (one dependency list, the README's commands)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_project_not_a_second_list():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip == [{"pip": ["-e .[dev]"]}], "environment.yml must only pip-install the project itself"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert all(re.match(r"(python|pip)\b", d) for d in conda), conda


def test_torch_pins_and_required_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    names = {re.split(r"[=<>\[ ]", d)[0].lower() for d in deps + project["optional-dependencies"]["dev"]}
    for needed in ("papermill", "nbval", "jupyterlab", "matplotlib", "seaborn", "pandas",
                   "cityscapesscripts", "tqdm", "pytest"):
        assert needed in names, needed
    assert "segmentation-models-pytorch" not in names  # only in the optional bench extra


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [l for l in (ROOT / "README.md").read_text().splitlines() if l.strip()]
    block = lines[lines.index("```bash") + 1: lines.index("```bash") + 3]
    assert [l.split("#")[0].strip() for l in block] == ["make report", "make test"]
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith("#")]
    assert ci[-1].strip() == "make test"
