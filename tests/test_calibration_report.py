"""The report's Calibration section and its figure, on hand-made ``calibration/`` files with a known answer."""
import base64
import json
import math
import re

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from armlib.reproduction import calibration, plots, report  # noqa: E402
from armlib.errors import UsageError  # noqa: E402

# {T: (fine mIoU, coarse mIoU)} of the base model, one calibration seed; "traffic light" is never resolved
CURVE = {800: (40.0, 38.0), 1600: (50.0, 44.0), 3200: (55.0, 47.3)}
UNRESOLVED = "traffic light"


def curve_frame() -> pd.DataFrame:
    return pd.DataFrame([{"annotation": a, "T": t, "seed": 100, "mIoU": m, "mIoU_all_classes": m * 0.9,
                          "train_time_s": 1.0, "IoU road": 90.0, f"IoU {UNRESOLVED}": 0.0}
                         for t, (fine, coarse) in CURVE.items() for a, m in (("fine", fine), ("coarse", coarse))])


def arm_frame() -> pd.DataFrame:
    """At T = 1600 seed 101 stays at its initialisation; at T = 3200 every seed moves."""
    rows = []
    for t, moved in ((1600, (True, False, True)), (3200, (True, True, True))):
        for i, m in enumerate(moved):
            rows.append({"T": t, "seed": 100 + i, "base mIoU": 44.0 + i, "ARM mIoU": 44.5 + i,
                         "shape change": 0.3 if m else 0.01, "moved": m, "suppression": 0.2 if m else 0.0,
                         "W(-1)": 1.4, "W(0)": 1.0, "W(+1)": 0.6, "W(-1) init": 1.0, "W(0) init": 1.0,
                         "W(+1) init": 1.0})
    return pd.DataFrame(rows)


def summary_json() -> dict:
    return {"rule": "smallest T with coarse cost >= 8% and ARM moved in every calibration seed",
            "candidates": {"800": {"coarse_cost": 0.05, "arm_moved": "not run"},
                           "1600": {"coarse_cost": 0.12, "arm_moved": "2/3"},
                           "3200": {"coarse_cost": 0.14, "arm_moved": "3/3"}},
            "chosen_T": 3200, "unresolved_classes": [UNRESOLVED], "paired_sd": 0.5,
            "power_target": {"effect": 1.0, "alpha": 0.01, "power": 0.8, "seeds_needed": 9.3},
            "mde_at": {"5": 1.9, "10": 0.93}}


def write_calibration(out_dir, summary=None, curve=None, arms=None, raw_json: str | None = None):
    folder = out_dir / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    (curve_frame() if curve is None else curve).to_csv(folder / calibration.CURVE_FILE, index=False)
    (arm_frame() if arms is None else arms).to_csv(folder / calibration.ARM_FILE, index=False)
    text = raw_json if raw_json is not None else json.dumps(summary_json() if summary is None else summary)
    (folder / calibration.SUMMARY_FILE).write_text(text)
    return folder


def section(page: str) -> str:
    """The Calibration section's HTML: from its heading to the next h2."""
    start = page.index("<h2 id=calibration>")
    return page[start:page.index("<h2", start + 1)]


def test_the_page_shows_why_t_is_what_it_is(tmp_path):
    folder = write_calibration(tmp_path)
    page = report.render(tmp_path).read_text()
    cal = section(page)
    assert "Chosen T = 3200" in cal
    # coarse cost per T, computed here from the CSV the report read (fine − coarse, % of fine)
    curve = pd.read_csv(folder / calibration.CURVE_FILE).pivot(index="T", columns="annotation", values="mIoU")
    for t, r in curve.iterrows():
        assert f"{100 * (r['fine'] - r['coarse']) / r['fine']:.1f} %" in cal, t
    assert "2/3: ARM did not move in 1 seed(s)" in cal and "not run" in cal
    unresolved = re.search(r"Unresolved classes.*?</p>", cal, re.S).group(0)
    assert UNRESOLVED in unresolved
    assert "paired SD 0.50" in cal and f"<b>{math.ceil(9.3)} (9.30 rounded up)</b>" in cal
    assert "α = 0.01" in cal and "80 % power" in cal and "n = 5: 1.90, n = 10: 0.93" in cal
    assert cal.count("<span class=bad>no</span>") == 1 and cal.count("<td>yes</td>") == 5   # seed 101 at 1600
    assert "calibration seeds 100, 101, 102" in cal
    png = (tmp_path / "figures" / f"{report.CALIBRATION_FIGURE}.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in cal


def test_table_and_figure_show_the_all_class_mean_the_cost_is_measured_on(tmp_path):
    """With unresolved classes listed, mIoU leaves them out while the cost is over every class: the page must show
    the numbers its cost comes from (a uniform scaling of the two columns could not tell them apart)."""
    curve = curve_frame()
    curve["mIoU_all_classes"] = curve["mIoU"] - 10.0   # not proportional: the cost over all classes differs
    summary = summary_json()
    summary["candidates"] = {t: {**c, "coarse_cost": calibration.coarse_cost(curve, int(t))}
                             for t, c in summary["candidates"].items()}
    write_calibration(tmp_path, summary=summary, curve=curve)
    cal = section(report.render(tmp_path).read_text())
    assert "base mIoU over all classes, fine labels" in cal
    row_800 = re.search(r"<tr><td class=num>800</td>.*?</tr>", cal).group(0)
    assert "<td class=num>30.00</td><td class=num>28.00</td><td class=num>6.7 %</td>" in row_800, row_800
    fig = plots.calibration_learning_curve(curve.assign(mIoU=curve["mIoU_all_classes"]), 3200, tmp_path)
    costs = sorted(t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("cost "))
    plots.plt.close(fig)
    assert "cost 6.7 %" in costs
    png = (tmp_path / "figures" / f"{report.CALIBRATION_FIGURE}.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in cal   # the page drew this figure


def test_the_fine_label_check_has_its_own_column_and_rows(tmp_path):
    coarse = arm_frame().assign(annotation="coarse")
    fine = arm_frame().query("T == 3200").assign(annotation="fine")
    fine.loc[fine["seed"] == 102, ["moved", "shape change"]] = (False, 0.03)
    summary = summary_json()
    summary["candidates"] = {t: {**c, "arm_moved_fine": {"3200": "2/3"}.get(t, "not run")}
                             for t, c in summary["candidates"].items()}
    summary["paired_sd_fine"] = 0.75
    write_calibration(tmp_path, summary=summary, arms=pd.concat([coarse, fine], ignore_index=True))
    cal = section(report.render(tmp_path).read_text())
    header = re.search(r"<tr><th>T \(SGD steps\).*?</tr>", cal).group(0)
    assert "ARM moved, coarse labels" in header and "ARM moved, fine labels" in header
    row_3200 = re.search(r"<tr><td class=num>3200</td>.*?</tr>", cal).group(0)
    assert "3/3" in row_3200 and "2/3: ARM did not move in 1 seed(s)" in row_3200
    assert "on fine labels: 0.75" in cal
    assert cal.count("<td>fine</td>") == 3 and cal.count("<span class=bad>no</span>") == 2   # 101@1600, 102 fine


def test_a_calibration_from_the_older_rule_says_fine_labels_were_not_checked(tmp_path):
    write_calibration(tmp_path)   # summary_json and arm_frame have no fine-label check, as files written before it
    cal = section(report.render(tmp_path).read_text())
    assert cal.count("not checked (older rule)") == 3 and cal.count("<td>coarse</td>") == 6
    assert "on fine labels" not in re.search(r"Seeds for the report.*?</p>", cal, re.S).group(0)


def test_an_interrupted_calibration_says_which_runs_are_missing(tmp_path):
    summary = {**summary_json(), "chosen_T": None, "missing_runs": ["arm_coarse@3200 seed 102"]}
    write_calibration(tmp_path, summary=summary)
    cal = section(report.render(tmp_path).read_text())
    assert "<p class=bad>Incomplete: 1 run(s) the rule needed have no record" in cal
    assert "arm_coarse@3200 seed 102" in cal and "No T chosen: the calibration is incomplete" in cal
    assert "checks candidates for T" in cal and "No candidate T met the criteria" not in cal
    write_calibration(tmp_path, summary={**summary_json(), "missing_runs": []})
    assert "Incomplete" not in section(report.render(tmp_path).read_text())


def test_calibration_comes_after_the_verdicts_and_before_the_tables(tmp_path):
    write_calibration(tmp_path)
    page = report.render(tmp_path).read_text()
    verdicts, calib, first = page.index("<h2>Verdicts"), page.index("<h2 id=calibration>"), page.index('<h2 id="')
    assert verdicts < calib < first
    assert page.index('href="#calibration"') < page.index('href="#table1"')


def test_no_t_chosen_and_arm_never_trained(tmp_path):
    summary = {**summary_json(), "chosen_T": None,
               "candidates": {"800": {"coarse_cost": 0.05, "arm_moved": "not run"}}}
    for key in ("paired_sd", "power_target", "mde_at"):
        del summary[key]
    curve = curve_frame().query("T == 800")
    write_calibration(tmp_path, summary=summary, curve=curve, arms=pd.DataFrame(columns=["T", "seed", "moved"]))
    cal = section(report.render(tmp_path).read_text())
    assert "No candidate T met the criteria" in cal and "Seeds for the report" not in cal
    assert "ARM was trained at no candidate T" in cal and "5.0 %" in cal


def test_an_uncalibrated_scale_says_so(tmp_path):
    page = report.render(tmp_path).read_text()
    assert '<p class=muted>This scale was not calibrated (no calibration/ folder).</p>' in section(page)
    assert not (tmp_path / "figures" / f"{report.CALIBRATION_FIGURE}.png").exists()
    (tmp_path / "calibration").mkdir()   # an interrupted `armlib calibrate` (it writes calibration.json last)
    assert "This scale was not calibrated (calibration/ holds no calibration.json)" in report.render(tmp_path).read_text()


@pytest.mark.parametrize("scale", ["quick", "gpu"])
def test_the_committed_reference_reads_as_its_folder_says(scale):
    """reports/<scale>: None without calibration.json (the page then says so), its files checked with one."""
    from armlib.paths import REPO_ROOT

    folder = REPO_ROOT / "reports" / scale
    cal = report.read_calibration(folder)   # a malformed committed file raises here
    assert (cal is None) == (not (folder / "calibration" / calibration.SUMMARY_FILE).exists())


def _without_key(key):
    s = summary_json()
    del s[key]
    return s


@pytest.mark.parametrize("change, names", [
    ({"raw_json": '{"rule": "smallest T", "candidates": '}, ["calibration.json", "not valid JSON"]),
    ({"summary": _without_key("chosen_T")}, ["calibration.json", "'chosen_T'"]),
    ({"summary": {**summary_json(), "power_target": {"effect": 1.0, "alpha": 0.01, "power": 0.8}}},
     ["calibration.json", "power_target.'seeds_needed'"]),
    ({"arms": arm_frame().drop(columns=["moved"])}, ["arm_learns.csv", "'moved'"]),
    ({"summary": {**summary_json(), "candidates": {**summary_json()["candidates"],
                                                   "3200": {"coarse_cost": 0.14, "arm_moved": "3/3",
                                                            "arm_moved_fine": 3}}}},
     ["calibration.json", "candidates.3200.arm_moved_fine"]),
    ({"summary": {**summary_json(), "paired_sd_fine": "0.7"}}, ["calibration.json", "paired_sd_fine"]),
    ({"summary": {**summary_json(), "missing_runs": "arm@3200"}}, ["calibration.json", "'missing_runs'"]),
    ({"curve": curve_frame().drop(columns=["annotation"])}, ["learning_curve.csv", "'annotation'"]),
    ({"curve": curve_frame().query("T != 1600")}, ["learning_curve.csv", "T = 1600"]),
    ({"summary": {**summary_json(), "candidates": {**summary_json()["candidates"],
                                                   "1600": {"coarse_cost": 0.2, "arm_moved": "2/3"}}}},
     ["calibration.json", "candidates.1600.coarse_cost", "two calibrations"]),
])
def test_a_malformed_calibration_file_is_one_line_naming_it(tmp_path, change, names):
    write_calibration(tmp_path, **change)
    with pytest.raises(UsageError) as err:
        report.render(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "results" / "claims.csv").exists()


def test_the_cli_prints_a_malformed_calibration_as_one_line(tmp_path, capsys):
    from armlib.cli import main

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "meta_table1.json").write_text(json.dumps({"scale": "quick"}))
    write_calibration(tmp_path, raw_json="{not json")
    assert main(["report", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "calibration.json: not valid JSON" in err, err


def test_the_figure_marks_the_chosen_t_and_writes_the_cost_calibration_computes(tmp_path):
    curve = curve_frame()
    fig = plots.calibration_learning_curve(curve, 1600, tmp_path)
    ax = fig.axes[0]
    costs = sorted(t.get_text() for t in ax.texts if t.get_text().startswith("cost "))
    assert costs == sorted(f"cost {100 * calibration.coarse_cost(curve, t):.1f} %" for t in CURVE)
    assert any(t.get_text().strip() == "chosen T = 1600" for t in ax.texts)
    assert [tuple(line.get_xdata()) for line in ax.lines if tuple(line.get_xdata()) == (1600, 1600)]
    assert "chosen T = 1600" in ax.get_title()
    assert (tmp_path / "figures" / "calibration_learning_curve.png").read_bytes().startswith(b"\x89PNG")
    plots.plt.close(fig)


def test_the_figure_without_a_chosen_t_says_none_met_the_criteria(tmp_path):
    fig = plots.calibration_learning_curve(curve_frame(), None, tmp_path)
    ax = fig.axes[0]
    assert "no candidate T met the criteria" in ax.get_title()
    assert len(ax.lines) == 2 and not any("chosen" in t.get_text() for t in ax.texts)   # fine, coarse; no mark
    plots.plt.close(fig)
    with pytest.raises(ValueError, match="'mIoU'"):
        plots.calibration_learning_curve(curve_frame().drop(columns=["mIoU"]), None, tmp_path)
