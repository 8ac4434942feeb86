"""The run store: a run's key changes whenever the code that turns its config into a result changes."""
import ast
import hashlib
from pathlib import Path

import armlib
from armlib.runs import TRAINING_CODE_VERSION

PACKAGE = Path(armlib.__file__).parent
# The code between a config and a result: trainer, losses, ARM, models, data generator and loading, evaluation.
TRAINING_CODE = ("train.py", "training/*.py", "losses.py", "arm.py", "fused.py", "confidence.py", "schedule.py",
                 "evaluation.py", "metrics.py", "models/*.py", "data/scenes.py", "data/synth.py", "data/coarse.py",
                 "data/geometry.py", "data/labels.py", "data/transforms.py", "data/loading.py", "data/cityscapes.py",
                 "data/folder.py", "data/ade20k.py")
# TRAINING_CODE_VERSION → fingerprint of TRAINING_CODE at that version.
# 2 was 8d2b10e39781dd7f until issue 28 added cpu_float64: an opt-in field, off in every committed run, whose
# float32 path was checked bit-identical (checkpoints, records, TTA and curves of six smoke rows), so the
# committed runs stay valid under version 2.
FINGERPRINTS = {1: "13ea0250371095f4", 2: "19ab6ff62bb9fea4"}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint() -> str:
    """Hash of the training code's syntax trees: comments, docstrings and formatting do not count."""
    digest = hashlib.sha256()
    for pattern in TRAINING_CODE:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(path.relative_to(PACKAGE).as_posix().encode())
            digest.update(ast.dump(_without_docstrings(ast.parse(path.read_text()))).encode())
    return digest.hexdigest()[:16]


def test_training_code_version_is_bumped_when_the_training_code_changes():
    now = fingerprint()
    assert FINGERPRINTS.get(TRAINING_CODE_VERSION) == now, (
        f"the training code changed: if results can change, bump armlib.runs.TRAINING_CODE_VERSION to "
        f"{TRAINING_CODE_VERSION + 1} (old runs then retrain) and add FINGERPRINTS[{TRAINING_CODE_VERSION + 1}] = "
        f"{now!r} here; if they cannot (a refactor), replace FINGERPRINTS[{TRAINING_CODE_VERSION}] with {now!r}")


def test_the_fingerprint_sees_code_but_not_comments(tmp_path, monkeypatch):
    source = "def f(x):\n    '''doc'''\n    return x + 1  # why\n"
    same = "def f(x):\n    '''other doc'''\n    # a comment\n    return x + 1\n"
    other = "def f(x):\n    return x + 2\n"
    dump = lambda s: ast.dump(_without_docstrings(ast.parse(s)))  # noqa: E731
    assert dump(source) == dump(same) and dump(source) != dump(other)


def test_an_opt_in_field_at_its_default_keeps_the_key_and_changes_it_otherwise(monkeypatch):
    from armlib import runs
    from armlib.config import TrainConfig
    committed = TrainConfig().to_dict()
    monkeypatch.setattr(runs, "OPT_IN_FIELDS", {"new_field": False})
    assert runs.run_key({**committed, "new_field": False}) == runs.run_key(committed)
    assert runs.run_key({**committed, "new_field": True}) != runs.run_key(committed)


def test_every_opt_in_field_is_a_config_field_with_that_default():
    from armlib import runs
    from armlib.config import TrainConfig
    defaults = TrainConfig().to_dict()
    for name, default in runs.OPT_IN_FIELDS.items():
        assert name in defaults and defaults[name] == default, name


def test_a_resume_may_change_exactly_the_runtime_fields(tmp_path):
    """The checkpoint's config check and the run key read the same list: a field a resume may change is one
    the key leaves out, and a field in the key (compile, iterations) is refused."""
    import pytest
    import torch

    from armlib.config import RUNTIME_ONLY, TrainConfig
    from armlib.training.checkpoint import TrainState, load_checkpoint, new_history, save_checkpoint
    from armlib.training.distributed import Ranks

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model, None, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0))
    cfg = TrainConfig(dataset="synth", device="cpu")
    save_checkpoint(tmp_path / "c.pt", cfg, state, 3, new_history(), 2, torch.device("cpu"), Ranks())
    runtime = {"device": "auto", "num_workers": 3, "threads": 2, "checkpoint_every": 7, "log_every": 3,
               "curve_every": 5, "quiet": True}
    assert set(runtime) == set(RUNTIME_ONLY)
    assert load_checkpoint(tmp_path / "c.pt", cfg.replace(**runtime), state, 2, Ranks(), torch.device("cpu"))[0] == 3
    for field, value in (("compile", True), ("iterations", 7)):
        with pytest.raises(ValueError, match=field):
            load_checkpoint(tmp_path / "c.pt", cfg.replace(**{field: value}), state, 2, Ranks(), torch.device("cpu"))


def test_records_are_read_through_read_record():
    """One reader of record.json (runs.read_record), so a change to what a record holds has one place to go."""
    import re

    inline = [f"{path.relative_to(PACKAGE)}: {m.group(0)}" for path in sorted(PACKAGE.rglob("*.py"))
              if path.name != "runs.py"
              for m in re.finditer(r"json\.loads?\([^\n]*record[^\n]*", path.read_text())]
    assert not inline, inline


def test_every_committed_quick_run_keeps_its_key():
    """The committed reference's runs stay valid: each experiment id in reports/quick's per-seed files (its rows'
    changes and run key) is the one the current code gives that row, so a fresh `make report` reuses those runs."""
    import pandas as pd

    from armlib.reproduction.experiments import experiment_id
    from armlib.paths import REPO_ROOT
    from armlib.reproduction.sections import get_scale, table_rows

    scale, checked = get_scale("quick"), 0
    for path in sorted((REPO_ROOT / "reports" / "quick" / "results").glob("*_seeds.csv")):
        frame = pd.read_csv(path)
        if "experiment" not in frame:
            continue
        for (table, row), ids in frame.groupby(["table", "row"])["experiment"]:
            rows = table_rows(table, scale)
            if row in rows:
                assert set(ids) == {experiment_id(rows[row], scale)}, (path.name, row)
                checked += 1
    assert checked >= 40
