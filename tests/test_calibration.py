"""armlib.reproduction.calibration's rule on hand-made learning curves and ARM tables with a known answer."""
import math

import pandas as pd
import pytest

from armlib.reproduction.calibration import MIN_COARSE_COST, choose, coarse_cost, unresolved_classes


def curves(points: dict[int, tuple[float, float]], iou: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """The learning-curve table: {T: (fine mIoU, coarse mIoU)}, one seed; ``iou`` gives each class's IoU per run
    (runs in the order T ascending, fine then coarse)."""
    rows = [{"annotation": a, "T": t, "seed": 100, "mIoU": m}
            for t, (fine, coarse) in sorted(points.items()) for a, m in (("fine", fine), ("coarse", coarse))]
    frame = pd.DataFrame(rows)
    for name, values in (iou or {}).items():
        frame[f"IoU {name}"] = values
    return frame


def arms(moved: dict[int, list[bool]], fine: dict[int, list[bool]] | None = None) -> pd.DataFrame:
    """The ARM table's columns choose reads: one row per (T, labels, calibration seed). ``fine`` defaults to
    ``moved`` (ARM moved alike on both labels)."""
    fine = moved if fine is None else fine
    return pd.DataFrame([{"T": t, "annotation": a, "seed": 100 + i, "moved": m}
                         for a, table in (("coarse", moved), ("fine", fine)) for t, flags in table.items()
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


def test_choose_needs_arm_to_move_on_fine_labels_too():
    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0), 3200: (55.0, 47.0)})
    both = {1600: [True, True, True], 3200: [True, True, True]}
    assert choose(c, arms(both, fine={1600: [True, False, True], 3200: [True] * 3}), [1600, 3200]) == 3200
    assert choose(c, arms(both, fine={3200: [True] * 3}), [1600, 3200]) == 3200      # fine not run at 1600
    assert choose(c, arms(both, fine={}), [1600, 3200]) is None                      # fine never run


def test_an_arm_table_without_labels_is_read_as_coarse_only():
    c = curves({1600: (50.0, 44.0)})
    old = arms({1600: [True, True]}).query("annotation == 'coarse'").drop(columns="annotation")
    assert choose(c, old, [1600]) is None   # the fine-label check cannot pass on a file that never ran it


def test_summary_counts_arm_moved_per_labels_and_the_paired_sd_per_labels():
    from armlib.reproduction.calibration import summary

    c = curves({800: (40.0, 38.0), 1600: (50.0, 44.0)})
    table = arms({1600: [True, True, True]}, fine={1600: [True, True, False]})
    table["base mIoU"] = 40.0
    table["ARM mIoU"] = [40.0, 41.0, 42.0, 40.0, 40.0, 43.0]   # coarse diffs 0, 1, 2; fine 0, 0, 3
    out = summary(c, table, [800, 1600], None, alpha=0.01, power=0.8, effect=1.0)
    assert out["candidates"]["800"] == {"coarse_cost": pytest.approx(0.05), "arm_moved": "not run",
                                        "arm_moved_fine": "not run"}
    assert out["candidates"]["1600"]["arm_moved"] == "3/3" and out["candidates"]["1600"]["arm_moved_fine"] == "2/3"
    table["moved"] = True
    out = summary(c, table, [800, 1600], 1600, alpha=0.01, power=0.8, effect=1.0)
    assert out["paired_sd"] == pytest.approx(1.0)                    # SD of 0, 1, 2
    assert out["paired_sd_fine"] == pytest.approx(3 ** 0.5)          # SD of 0, 0, 3: sqrt(((1)²+(1)²+(2)²)/2)


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
    from armlib.reproduction import calibration

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

    from armlib.reproduction.calibration import moved_at

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

    from armlib.reproduction.calibration import coarse_cost

    # mIoU leaves a scale's unresolved classes out; the all-class mean does not depend on that list.
    curves = pd.DataFrame({"annotation": ["fine", "coarse"], "T": [800, 800], "mIoU": [70.0, 63.0],
                           "mIoU_all_classes": [50.0, 40.0]})
    assert coarse_cost(curves, 800) == (50.0 - 40.0) / 50.0
    assert coarse_cost(curves.drop(columns="mIoU_all_classes"), 800) == (70.0 - 63.0) / 70.0


def test_calibrate_trains_fine_labels_only_where_coarse_moved_and_stops_at_the_chosen_t(tmp_path, monkeypatch):
    """The loop of calibrate, with training replaced by a table of outcomes: T = 800 fails on coarse labels (no
    fine-label runs there), 1600 costs too little (no ARM runs), 3200 passes on both, 6400 is never trained."""
    import json

    from armlib.reproduction import calibration

    points = {800: (40.0, 36.0), 1600: (50.0, 47.0), 3200: (55.0, 48.0), 6400: (58.0, 50.0)}   # 10, 6, 13, 14 %
    coarse_moved = {800: [True, False], 3200: [True, True]}
    trained = []

    def execute(runs, scale, data_root, jobs=None, desc="", **where):
        trained.append(desc)

    def arm_table(runs, scale=None, data_root="data", unresolved=None):
        rows = [{"T": r.spec["iterations"], "annotation": r.spec["annotation"], "seed": r.seed,
                 "moved": coarse_moved[r.spec["iterations"]][r.seed - 100] if r.spec["annotation"] == "coarse"
                 else True, "base mIoU": 40.0, "ARM mIoU": 40.0 + (r.seed - 100)}
                for r in runs if r.spec["reweight"] == "arm"]
        return pd.DataFrame(rows)

    monkeypatch.setattr(calibration, "execute", execute)
    monkeypatch.setattr(calibration, "curve_table", lambda runs: curves(points))
    monkeypatch.setattr(calibration, "arm_table", arm_table)
    result = calibration.calibrate("smoke", iterations=(6400, 800, 1600, 3200), seeds=(100, 101),
                                   runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    assert trained == ["learning curve", "ARM on coarse labels at T=800", "ARM on coarse labels at T=3200",
                       "ARM on fine labels at T=3200"]
    assert result["chosen_T"] == 3200 and result["paired_sd"] == pytest.approx(2 ** -0.5)
    assert {t: (c["arm_moved"], c["arm_moved_fine"]) for t, c in result["candidates"].items()} == {
        "800": ("1/2", "not run"), "1600": ("not run", "not run"), "3200": ("2/2", "2/2"),
        "6400": ("not run", "not run")}
    assert json.loads((tmp_path / "out" / calibration.SUMMARY_FILE).read_text())["chosen_T"] == 3200


def test_from_records_trains_nothing_and_stops_at_the_first_t_without_records(tmp_path, monkeypatch):
    """An interrupted calibration: T = 800 complete (ARM moved in seed 100 only), at 1600 seed 101's ARM run has no
    record. The files list the missing run, keep 1600's complete pair, and choose nothing; with no complete pair
    at 1600, its cell says "cut off", not "not run"."""
    import json

    from armlib.reproduction import calibration

    points = {800: (40.0, 36.0), 1600: (50.0, 44.0), 3200: (55.0, 48.0)}   # every cost ≥ 8 %
    have = {("coarse", 800, "none", 100), ("coarse", 800, "arm", 100), ("coarse", 800, "none", 101),
            ("coarse", 800, "arm", 101), ("coarse", 1600, "none", 100), ("coarse", 1600, "arm", 100),
            ("coarse", 1600, "none", 101)}

    def fake_record(run):
        return (run.spec["annotation"], run.spec["iterations"], run.spec["reweight"], run.seed) in have

    monkeypatch.setattr(calibration.Run, "record_path", property(
        lambda r: tmp_path / ("yes" if fake_record(r) or r.row.startswith("base_") and r.seed == 100 else "no")))
    (tmp_path / "yes").write_text("{}")
    monkeypatch.setattr(calibration, "execute", lambda *a, **k: pytest.fail("from_records must train nothing"))
    monkeypatch.setattr(calibration, "curve_table", lambda runs: curves(points))
    def arm_table(runs, scale=None, data_root="data", unresolved=None):
        return pd.DataFrame([{"T": r.spec["iterations"], "annotation": r.spec["annotation"], "seed": r.seed,
                              "moved": r.seed == 100, "base mIoU": 40.0, "ARM mIoU": 40.0}
                             for r in runs if r.spec["reweight"] == "arm"],
                            columns=["T", "annotation", "seed", "moved", "base mIoU", "ARM mIoU"])

    monkeypatch.setattr(calibration, "arm_table", arm_table)
    result = calibration.calibrate("smoke", iterations=(800, 1600, 3200), seeds=(100, 101), runs_dir=tmp_path,
                                   out_dir=tmp_path / "out", from_records=True)
    assert result["missing_runs"] == ["arm_coarse@1600 seed 101"]
    assert result["chosen_T"] is None
    assert {t: c["arm_moved"] for t, c in result["candidates"].items()} == {
        "800": "1/2", "1600": "1/1 (cut off: 1 of 2 seed pairs finished)", "3200": "not run"}
    written = json.loads((tmp_path / "out" / calibration.SUMMARY_FILE).read_text())
    assert written["missing_runs"] == result["missing_runs"]
    have.discard(("coarse", 1600, "arm", 100))
    result = calibration.calibrate("smoke", iterations=(800, 1600, 3200), seeds=(100, 101), runs_dir=tmp_path,
                                   out_dir=tmp_path / "out", from_records=True)
    assert result["missing_runs"] == ["arm_coarse@1600 seed 100", "arm_coarse@1600 seed 101"]
    assert result["candidates"]["1600"]["arm_moved"] == "cut off"
    assert result["candidates"]["1600"]["arm_moved_fine"] == result["candidates"]["3200"]["arm_moved"] == "not run"


def test_from_records_refuses_a_learning_curve_without_records(tmp_path):
    from armlib.reproduction import calibration

    with pytest.raises(ValueError, match="--from-records: the learning curve has no record in .*train it first"):
        calibration.calibrate("smoke", iterations=(4,), seeds=(100, 101), runs_dir=tmp_path, out_dir=tmp_path / "o",
                              from_records=True)
    assert not (tmp_path / "o").exists()


def test_the_committed_gpu_records_still_give_the_committed_gpu_calibration(tmp_path):
    """reports/gpu/calibration_runs.tar.gz holds the records of the gpu calibration cut off on an H200; a GPU
    session unpacks it into runs/ and resumes from it. A change to the gpu config or the training code gives the
    runs new keys and orphans them: this fails then, so the change is made knowingly (rerun the calibration)."""
    import tarfile

    from armlib.reproduction import calibration

    committed = calibration.committed_dir("gpu")
    with tarfile.open(committed.parent / "calibration_runs.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    try:
        calibration.calibrate("gpu", iterations=(750, 1500, 3000), runs_dir=tmp_path / "runs",
                              out_dir=tmp_path / "out", from_records=True)
    except ValueError as exc:
        pytest.fail(f"the committed gpu calibration records no longer match the gpu config or the training code "
                    f"({exc}); rerun the calibration on a GPU, or remove the partial one knowingly")
    import pandas as pd

    for name in (calibration.SUMMARY_FILE, calibration.ARM_FILE, calibration.CURVE_FILE):
        ours, theirs = pd.read_csv(tmp_path / "out" / name), pd.read_csv(committed / name)
        # Every column is read from the records, except the shape pull, which runs ARM's initial curve through
        # float32 autograd on this CPU: its last bits follow oneDNN's instruction set (seen: 0.0110659501670 on
        # AMD EPYC, 0.0110659502550 on an Intel Xeon, both AVX-512), so it is compared to float32 rounding.
        pull = [c for c in ours.columns if c.startswith("shape pull")]
        pd.testing.assert_frame_equal(ours.drop(columns=pull), theirs.drop(columns=pull), check_exact=True,
                                      obj=name)
        pd.testing.assert_frame_equal(ours[pull], theirs[pull], check_exact=False, rtol=1e-6, obj=name)


def test_calibrate_goes_on_to_the_next_t_when_arm_stays_flat_on_fine_labels(tmp_path, monkeypatch):
    from armlib.reproduction import calibration

    points = {800: (40.0, 36.0), 1600: (50.0, 44.0)}   # both costs ≥ 8 %
    fine_moved = {800: [True, False], 1600: [True, True]}
    trained = []

    def arm_table(runs, scale=None, data_root="data", unresolved=None):
        return pd.DataFrame([{"T": r.spec["iterations"], "annotation": r.spec["annotation"], "seed": r.seed,
                              "moved": r.spec["annotation"] == "coarse"
                              or fine_moved[r.spec["iterations"]][r.seed - 100],
                              "base mIoU": 40.0, "ARM mIoU": 40.0 + r.seed % 2}
                             for r in runs if r.spec["reweight"] == "arm"])

    monkeypatch.setattr(calibration, "execute", lambda runs, scale, data_root, jobs=None, desc="", **where:
                        trained.append(desc))
    monkeypatch.setattr(calibration, "curve_table", lambda runs: curves(points))
    monkeypatch.setattr(calibration, "arm_table", arm_table)
    result = calibration.calibrate("smoke", iterations=(800, 1600), seeds=(100, 101), runs_dir=tmp_path,
                                   out_dir=tmp_path / "out")
    assert trained == ["learning curve", "ARM on coarse labels at T=800", "ARM on fine labels at T=800",
                       "ARM on coarse labels at T=1600", "ARM on fine labels at T=1600"]
    assert result["chosen_T"] == 1600 and result["missing_runs"] == []
    assert result["candidates"]["800"] == {"coarse_cost": pytest.approx(0.1), "arm_moved": "2/2",
                                           "arm_moved_fine": "1/2"}


def test_calibrate_sends_its_runs_through_the_chosen_executor(monkeypatch, tmp_path):
    """`armlib calibrate --executor slurm ...` reaches execute() (it used to train on the local pool only)."""
    import argparse

    from armlib import cli
    from armlib.reproduction import calibration
    from armlib.reproduction.executors import ClusterOptions
    seen = []

    class Stop(Exception):
        pass

    def execute(runs, scale, data_root, jobs=None, desc="", executor="pool", cluster=None):
        seen.append((executor, cluster))
        raise Stop

    monkeypatch.setattr(calibration, "execute", execute)
    parser = argparse.ArgumentParser()
    cli.add_command_arguments("calibrate", parser)
    args = parser.parse_args(["--scale", "smoke", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                              "--executor", "slurm", "--slurm-partition", "p", "--gpus-per-run", "2"])
    with pytest.raises(Stop):
        calibration.run(args)
    assert seen == [("slurm", ClusterOptions(partition="p", gpus_per_run=2))]
