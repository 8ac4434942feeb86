"""armlib.reproduction.tutorial and its notebook ``notebooks/use_arm.ipynb`` (a tutorial, not a report section).

The golden ``tests/notebooks/use_arm.ipynb`` is the notebook executed by papermill with ``scale="smoke"`` (cwd
``tests/notebooks``, then ``armlib.reproduction.reproduce.tidy_golden``); nbval checks its ``# NBVAL_CHECK_OUTPUT`` cells, which
print only analytic values (shapes, parameter counts) and invariants, never training-derived numbers.
"""
import ast
import json

import pytest
import torch
from torch import nn

from armlib import ARMLoss, adversarial_sgd
from armlib.reproduction import tutorial
from armlib.paths import NOTEBOOK_DIR, REPO_ROOT

NOTEBOOK = NOTEBOOK_DIR / "use_arm.ipynb"
GOLDEN = REPO_ROOT / "tests" / "notebooks" / "use_arm.ipynb"


def cells(path, kind=None):
    return [c for c in json.loads(path.read_text())["cells"] if kind is None or c["cell_type"] == kind]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_synthetic_scenes_shapes_labels_and_determinism():
    scenes = tutorial.synthetic_scenes(3, (32, 48), seed=1)
    assert scenes.images.shape == (3, 3, 32, 48) and scenes.images.dtype == torch.float32
    assert scenes.coarse.shape == scenes.fine.shape == (3, 32, 48) and scenes.coarse.dtype == torch.int64
    labels = set(scenes.coarse.unique().tolist()) | set(scenes.fine.unique().tolist())
    assert labels <= set(range(tutorial.NUM_CLASSES)) | {255}
    assert (scenes.coarse == 255).float().mean() > (scenes.fine == 255).float().mean()  # coarse leaves gaps
    again = tutorial.synthetic_scenes(3, (32, 48), seed=1)
    assert torch.equal(scenes.images, again.images) and torch.equal(scenes.coarse, again.coarse)
    assert not torch.equal(tutorial.synthetic_scenes(3, (32, 48), seed=1, split=1).images, scenes.images)
    with pytest.raises(ValueError, match="size must be at least 16"):
        tutorial.synthetic_scenes(1, (8, 48))
    with pytest.raises(ValueError, match="scale must be one of"):
        tutorial.scale_settings("paper")


class TinyNet(nn.Module):
    def __init__(self, as_dict: bool):
        super().__init__()
        self.conv, self.as_dict = nn.Conv2d(3, tutorial.NUM_CLASSES, 3, padding=1), as_dict

    def forward(self, x):
        return {"out": self.conv(x)} if self.as_dict else self.conv(x)


@pytest.mark.parametrize("as_dict", [True, False], ids=["torchvision-dict", "smp-tensor"])
def test_fit_trains_both_output_styles_and_arm_learns(as_dict):
    scenes = tutorial.synthetic_scenes(4, (32, 48))
    torch.manual_seed(0)
    model, criterion = TinyNet(as_dict), ARMLoss()
    arm_before = [p.detach().clone() for p in criterion.parameters()]
    optimizer = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.1)
    history = tutorial.fit(model, criterion, optimizer, scenes.images, scenes.coarse, iterations=5, batch_size=2)
    assert len(history["loss"]) == 5 and history["loss"][-1] < history["loss"][0]
    assert any(not torch.equal(a, b) for a, b in zip(arm_before, criterion.parameters()))
    metrics = tutorial.evaluate(model, scenes.images, scenes.fine)
    assert 0 <= metrics["mIoU"] <= 100
    with pytest.raises(ValueError, match="batch_size must be in"):
        tutorial.fit(model, criterion, optimizer, scenes.images, scenes.coarse, iterations=1, batch_size=5)


def test_same_seed_same_batches():
    """The side-by-side comparison rests on this: two fits with one seed see identical batches."""
    scenes = tutorial.synthetic_scenes(5, (32, 48))
    seen = []

    class Recorder(nn.Module):
        def forward(self, logits, masks):
            seen.append(masks.clone())
            return logits.sum() * 0

    model = TinyNet(True)
    for _ in range(2):
        tutorial.fit(model, Recorder(), torch.optim.SGD(model.parameters(), lr=0.0), scenes.images, scenes.coarse,
                     iterations=4, batch_size=2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(seen[:4], seen[4:]))


def test_weight_map_is_relative_to_the_plain_mean_and_paint_shows_it():
    scenes = tutorial.synthetic_scenes(2, (32, 48))
    weights, v = tutorial.weight_map(ARMLoss(), TinyNet(False), scenes.images, scenes.coarse)
    valid = scenes.coarse != 255
    assert weights.shape == v.shape == scenes.coarse.shape
    assert (weights[~valid] == 0).all() and weights[valid].mean() == pytest.approx(1.0, abs=1e-4)
    assert v.min() >= -1 and v.max() <= 1
    painted = tutorial.paint(scenes.images[0], weights[0])
    assert painted.shape == (32, 48, 3) and painted.min() >= 0 and painted.max() <= 1
    with pytest.raises(ValueError, match="weights H×W"):
        tutorial.paint(scenes.images[0], weights)


def test_notebook_parameters_are_literal_and_typed():
    params = [c for c in cells(NOTEBOOK, "code") if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    names = {}
    for node in ast.parse(source(params[0])).body:
        assert isinstance(node, ast.AnnAssign), "typed literal assignments only (papermill --help-notebook)"
        names[node.target.id] = ast.literal_eval(node.value)
    assert names["scale"] == "quick" and set(names) == {"scale", "seed", "noise"}
    assert set(tutorial.SCALES) == {"smoke", "quick"}


def test_notebook_holds_no_logic_and_is_not_a_report_section():
    for cell in cells(NOTEBOOK, "code"):
        for node in ast.walk(ast.parse(source(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.Lambda,
                                         ast.ListComp, ast.DictComp)), ast.dump(node)[:80]
    from armlib.reproduction.sections import SECTION_KEYS

    assert "use_arm" not in SECTION_KEYS


def test_golden_matches_the_notebook_checks_no_training_number_and_ran_fast():
    ours = [(c["cell_type"], source(c)) for c in cells(NOTEBOOK)]
    golden = cells(GOLDEN)
    assert [(c["cell_type"], source(c)) for c in golden
            if "injected-parameters" not in c["metadata"].get("tags", [])] == ours, "regenerate the golden"
    injected = [c for c in golden if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and 'scale = "smoke"' in source(injected[0])
    for cell in golden:
        if "NBVAL_CHECK_OUTPUT" in source(cell):
            assert "mIoU" not in source(cell) and "loss.item" not in source(cell)
    meta = json.loads(GOLDEN.read_text())["metadata"]["papermill"]
    assert meta["parameters"] == {"scale": "smoke"} and meta["duration"] < 60


class FixedPrediction(nn.Module):
    """Predicts the given N×H×W labels for whatever images it gets (as one-hot logits)."""

    def __init__(self, labels, num_classes=3):
        super().__init__()
        self.labels, self.num_classes = labels, num_classes

    def forward(self, x):
        return {"out": torch.nn.functional.one_hot(self.labels[: len(x)], self.num_classes).permute(0, 3, 1, 2).float()}


def test_paired_comparison_is_the_per_image_accuracy_difference_with_a_t_interval():
    from scipy import stats

    masks = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [1, 1]], [[2, 0], [0, 0]]])
    a = FixedPrediction(torch.tensor([[[0, 0], [0, 0]], [[1, 1], [0, 0]], [[2, 2], [2, 2]]]))
    b = FixedPrediction(torch.tensor([[[0, 1], [0, 0]], [[1, 1], [1, 0]], [[2, 0], [0, 2]]]))
    result = tutorial.paired_comparison(a, b, torch.zeros(3, 3, 2, 2), masks)
    acc_a, acc_b = [100 / 3, 50.0, 25.0], [200 / 3, 75.0, 75.0]   # counted by hand, ignored pixel left out
    assert result["a"].tolist() == pytest.approx(acc_a) and result["b"].tolist() == pytest.approx(acc_b)
    delta = [y - x for x, y in zip(acc_a, acc_b)]
    low, high = stats.t.interval(0.95, 2, loc=sum(delta) / 3, scale=stats.sem(delta))
    assert (result["mean"], result["ci_low"], result["ci_high"]) == pytest.approx((sum(delta) / 3, low, high))
    tutorial.plot_paired(result)


def test_fit_runs_the_isolated_phase_first(monkeypatch):
    seen = []
    monkeypatch.setattr(tutorial, "train_step", lambda *a, isolated=False: seen.append(isolated) or 0.0)
    tutorial.fit(nn.Identity(), None, None, torch.zeros(4, 3, 2, 2), torch.zeros(4, 2, 2), 40, 2,
                 isolated_fraction=0.05)
    assert seen == [True, True] + [False] * 38
