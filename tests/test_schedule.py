import pytest
import torch

from armlib.schedule import paper_lr


def test_paper_schedule_values():
    t, base = 40_000, 0.02
    assert paper_lr(0, t, base) == pytest.approx(base / 100)
    assert paper_lr(1000, t, base) == pytest.approx(base / 100 + (base - base / 100) * 1000 / 2000)
    assert paper_lr(2000, t, base) == pytest.approx(base)
    assert paper_lr(23_999, t, base) == pytest.approx(base)
    assert paper_lr(24_000, t, base) == pytest.approx(base / 10)
    assert paper_lr(35_999, t, base) == pytest.approx(base / 10)
    assert paper_lr(36_000, t, base) == pytest.approx(base / 100)
    assert paper_lr(t, t, base) == pytest.approx(base / 100)


def test_warmup_is_linear_and_monotone():
    t = 1000
    lrs = [paper_lr(i, t) for i in range(0, 51)]
    diffs = [b - a for a, b in zip(lrs, lrs[1:])]
    assert all(d == pytest.approx(diffs[0]) for d in diffs)


def test_lambda_lr_factor_form():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: paper_lr(it, 100, 1.0))
    seen = []
    for _ in range(100):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([paper_lr(i, 100, 0.02) for i in range(100)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="total"):
        paper_lr(0, 0)
    with pytest.raises(ValueError, match="it must be"):
        paper_lr(11, 10)
