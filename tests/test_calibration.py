"""armlib.calibration's rule on hand-made learning curves and ARM tables with a known answer."""
import math

import pandas as pd
import pytest

from armlib.calibration import MIN_COARSE_COST, choose, coarse_cost, unresolved_classes


def curves(points: dict[int, tuple[float, float]], iou: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """The learning-curve table: {T: (fine mIoU, coarse mIoU)}, one seed; ``iou`` gives each class's IoU per run
    (runs in the order T ascending, fine then coarse)."""
    rows = [{"annotation": a, "T": t, "seed": 100, "mIoU": m}
            for t, (fine, coarse) in sorted(points.items()) for a, m in (("fine", fine), ("coarse", coarse))]
    frame = pd.DataFrame(rows)
    for name, values in (iou or {}).items():
        frame[f"IoU {name}"] = values
    return frame


def arms(moved: dict[int, list[bool]]) -> pd.DataFrame:
    """The ARM table's columns choose reads: one row per (T, calibration seed)."""
    return pd.DataFrame([{"T": t, "seed": 100 + i, "moved": m} for t, flags in moved.items()
                         for i, m in enumerate(flags)])


def test_coarse_cost_is_the_share_of_the_fine_miou_lost():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0)})
    assert coarse_cost(c, 800) == pytest.approx(2.0 / 40.0)
    assert coarse_cost(c, 1600) == pytest.approx(0.12)
    assert coarse_cost(curves({800: (50.0, 55.0)}), 800) == pytest.approx(-0.1)   # coarse better: negative cost


def test_unresolved_classes_are_zero_or_absent_in_every_run_fine_included():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0)},
               iou={"road": [90.0, 88.0, 92.0, 91.0],
                    "pole": [0.0, 0.0, 0.0, 0.0],                    # never resolved
                    "rider": [math.nan, 0.0, math.nan, math.nan],    # never predicted nor present: IoU NaN
                    "sign": [3.0, 0.0, 0.0, 0.0]})                   # fine labels resolve it once: kept
    assert unresolved_classes(c) == ["pole", "rider"]
    assert unresolved_classes(curves({800: (40.0, 38.0)})) == []   # no IoU columns: nothing to leave out


def test_choose_takes_the_smallest_t_meeting_both_criteria():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0), 3200: (55.0, 47.0)})   # costs 5 %, 12 %, 14.5 %
    assert choose(c, arms({1600: [True, True, True], 3200: [True, True, True]}), [3200, 800, 1600]) == 1600


def test_choose_skips_a_t_where_one_seed_did_not_move():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0), 3200: (55.0, 47.0)})
    assert choose(c, arms({1600: [True, False, True], 3200: [True, True, True]}), [800, 1600, 3200]) == 3200


def test_choose_skips_a_t_whose_coarse_cost_is_too_small_even_if_arm_moved():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0)})
    assert choose(c, arms({800: [True, True], 1600: [True, True]}), [800, 1600]) == 1600


def test_choose_returns_none_when_no_t_meets_both():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0)})
    assert choose(c, arms({1600: [False, True]}), [800, 1600]) is None
    assert choose(c, arms({}).reindex(columns=["T", "seed", "moved"]), [800, 1600]) is None   # ARM never ran


def test_choose_accepts_a_cost_exactly_at_the_criterion():
    fine = 50.0
    c = curves({800: (fine, fine - fine * MIN_COARSE_COST)})
    assert coarse_cost(c, 800) == MIN_COARSE_COST   # exact in floating point for these values: the rule's ≥ is tested
    assert choose(c, arms({800: [True, True]}), [800]) == 800
    c = curves({800: (fine, fine - fine * MIN_COARSE_COST + 0.01)})   # just short of the criterion
    assert choose(c, arms({800: [True, True]}), [800]) is None


def test_attach_copies_the_committed_calibration_into_a_report_folder(tmp_path, monkeypatch):
    from armlib import calibration

    committed = tmp_path / "repo" / "reports" / "quick" / calibration.CALIBRATION_DIR
    committed.mkdir(parents=True)
    (committed / calibration.SUMMARY_FILE).write_text('{"chosen_T": 3200}')
    monkeypatch.setattr(calibration, "committed_dir", lambda scale: committed if scale == "quick" else tmp_path / "none")
    out = tmp_path / "reports"
    stale = out / calibration.CALIBRATION_DIR
    stale.mkdir(parents=True)
    (stale / "old.csv").write_text("x")
    assert calibration.attach("quick", out) == stale
    assert sorted(p.name for p in stale.iterdir()) == [calibration.SUMMARY_FILE]   # the older copy is replaced
    assert (stale / calibration.SUMMARY_FILE).read_text() == '{"chosen_T": 3200}'
    assert calibration.attach("smoke", tmp_path / "other") is None                # never calibrated: nothing
    assert calibration.attach("quick", committed.parent) == committed                # the reference itself: untouched
    assert (committed / calibration.SUMMARY_FILE).exists()


def test_moved_at_is_the_first_logged_iteration_whose_shape_moved(tmp_path):
    import numpy as np

    from armlib.calibration import moved_at

    v = np.linspace(-1.0, 1.0, 5)
    flat, tilted = np.full(5, 0.5), 0.5 - 0.2 * v          # max |W/mean − 1| of the tilted curve: 0.4 ≥ 0.1
    rows = [(0, flat), (10, flat * 3.0), (20, 0.5 - 0.01 * v), (30, tilted), (40, flat)]  # ×3: a scaling, no move
    lines = ["iteration,v,w"] + [f"{it},{x},{w}" for it, curve in rows for x, w in zip(v, curve)]
    (tmp_path / "curves.csv").write_text("\n".join(lines) + "\n")
    assert moved_at(tmp_path / "curves.csv") == 30
    (tmp_path / "flat.csv").write_text("\n".join(lines[: 1 + 15]) + "\n")   # iterations 0, 10, 20 only
    assert moved_at(tmp_path / "flat.csv") is None


def test_coarse_cost_is_over_every_class_when_the_file_has_it():
    import pandas as pd

    from armlib.calibration import coarse_cost

    # mIoU leaves a scale's unresolved classes out; the all-class mean does not depend on that list.
    curves = pd.DataFrame({"annotation": ["fine", "coarse"], "T": [800, 800], "mIoU": [70.0, 63.0],
                           "mIoU_all_classes": [50.0, 40.0]})
    assert coarse_cost(curves, 800) == (50.0 - 40.0) / 50.0
    assert coarse_cost(curves.drop(columns="mIoU_all_classes"), 800) == (70.0 - 63.0) / 70.0
