"""Metrics against a pure-Python per-pixel count, and mmsegmentation's NaN convention."""
import math

import pytest
import torch

from armlib.metrics import ConfusionMatrix, evaluate


def reference(pairs, c):
    """Count per class in plain Python from (gt, pred) pairs, 255 skipped."""
    inter, lab, prd = [0] * c, [0] * c, [0] * c
    correct = total = 0
    for g, p in pairs:
        if g == 255:
            continue
        total += 1
        lab[g] += 1
        prd[p] += 1
        if g == p:
            inter[g] += 1
            correct += 1
    iou = [inter[k] / (lab[k] + prd[k] - inter[k]) * 100 if lab[k] + prd[k] > 0 else math.nan for k in range(c)]
    acc = [inter[k] / lab[k] * 100 if lab[k] > 0 else math.nan for k in range(c)]
    mean = lambda xs: sum(x for x in xs if not math.isnan(x)) / sum(1 for x in xs if not math.isnan(x))
    return correct / total * 100, mean(acc), mean(iou), iou


def test_matches_reference_over_batches():
    g = torch.Generator().manual_seed(0)
    c = 6
    cm = ConfusionMatrix(c)
    pairs = []
    for _ in range(3):
        target = torch.randint(0, c - 1, (2, 5, 7), generator=g)  # class 5 never in gt ...
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        pred = torch.randint(0, c - 2, (2, 5, 7), generator=g)    # ... nor in pred: NaN
        cm.update(pred, target)
        pairs += list(zip(target.flatten().tolist(), pred.flatten().tolist()))
    got = cm.compute()
    a_acc, m_acc, m_iou, iou = reference(pairs, c)
    assert got["aAcc"] == pytest.approx(a_acc)
    assert got["mAcc"] == pytest.approx(m_acc)
    assert got["mIoU"] == pytest.approx(m_iou)
    assert math.isnan(got["IoU"][5]) and not math.isnan(got["IoU"][4])
    assert got["IoU"][:5] == pytest.approx(iou[:5])


def test_dataset_level_not_per_image_mean():
    # image 1: class 0 perfect on 1 pixel; image 2: class 0 wrong on 3 pixels
    pred = torch.tensor([[0, 1, 1, 1]])
    target = torch.tensor([[0, 0, 0, 0]])
    assert evaluate(pred, target, 2)["IoU"][0] == pytest.approx(25.0)


def test_perfect_and_bad_input():
    t = torch.tensor([[0, 1, 2, 255]])
    out = evaluate(t.clone().masked_fill(t == 255, 0), t, 3)
    assert out["mIoU"] == 100 and out["aAcc"] == 100
    with pytest.raises(ValueError, match="target has labels"):
        evaluate(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]), 3)
    with pytest.raises(ValueError, match="shape"):
        evaluate(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), 3)


def test_nothing_to_score_is_a_status_not_just_nan():
    # An all-ignored val set gave NaN metrics, which the tables could not tell from a diverged run.
    from armlib.metrics import NOTHING_TO_SCORE

    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.full((2, 4, 4), 255))
    got = cm.compute()
    assert got["status"] == NOTHING_TO_SCORE and got["pixels"] == 0 and math.isnan(got["mIoU"])
    ok = evaluate(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 255], [1, 255]]]), 3)
    assert ok["status"] == "ok" and ok["pixels"] == 2


def test_reported_metrics_leave_unresolved_classes_out_of_the_means_only():
    from armlib.metrics import reported_metrics

    names = ["road", "pole", "car", "sky"]
    iou, acc = [80.0, 0.0, float("nan"), 50.0], [90.0, 0.0, float("nan"), 70.0]
    m = {"aAcc": 88.0, "mIoU": (80.0 + 0.0 + 50.0) / 3, "IoU": iou, "Acc": acc}
    out = reported_metrics(m, names, unresolved=("pole",))
    assert out["mIoU"] == pytest.approx((80.0 + 50.0) / 2) and out["mAcc"] == pytest.approx((90.0 + 70.0) / 2)
    assert out["mIoU_all_classes"] == m["mIoU"] and out["aAcc"] == 88.0
    assert reported_metrics(m, names)["mIoU"] == pytest.approx(m["mIoU"])
    with pytest.raises(ValueError, match=r"unresolved_classes \['person'\]"):
        reported_metrics(m, names, unresolved=("person",))
